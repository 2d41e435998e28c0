"""simple-salesforce clients for the sandbox, as tests and benchmarks need them.

Not used by leadscore itself (its connector builds its own session): these give outside code a
client acting as any sandbox user over real HTTPS.
"""

from __future__ import annotations

from typing import Any

import requests
from simple_salesforce import Salesforce


class CaSession(requests.Session):
    """A session that trusts the sandbox CA on every call.

    Machines that set ``REQUESTS_CA_BUNDLE`` make requests ignore ``session.verify`` unless a
    call passes ``verify=`` itself (api-contracts section 1.1); simple-salesforce passes none, so
    the bundle is injected here.
    """

    def __init__(self, ca_bundle: str) -> None:
        super().__init__()
        self.ca_bundle = ca_bundle

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        """Send a request, verifying TLS against the sandbox CA unless told otherwise."""
        kwargs.setdefault("verify", self.ca_bundle)
        return super().request(*args, **kwargs)


def login_as(info: dict[str, Any], username: str, password: str) -> tuple[Salesforce, str]:
    """A direct-mode client acting as a user (OAuth username-password flow).

    Args:
        info: ``Sandbox.info``.
        username: The user's username (a rep from ``info["sales_users"]``, or the integration
            user).
        password: Their password.

    Returns:
        The client and the user's id (from the token's identity URL).
    """
    session = CaSession(info["ca_bundle"])
    response = session.post(
        f"{info['login_url']}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
            "username": username,
            "password": password,
        },
    )
    response.raise_for_status()
    body = response.json()
    client = Salesforce(
        instance_url=info["salesforce_url"], session_id=body["access_token"], session=session
    )
    return client, str(body["id"]).rsplit("/", 1)[1]
