"""The OAuth 2.0 refresh token flow of the sandbox's connected app.

A refresh token stands for one user's consent to the connected app, given once in a browser; the
client trades it for access tokens at ``POST /services/oauth2/token`` with
``grant_type=refresh_token&refresh_token=...&client_id=...&client_secret=...``
(https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm).
tap-salesforce and Airbyte log in only this way, against the hard-coded login hosts
(``shared/docs/api-contracts-realorg.md`` section 5). The sandbox holds one refresh token for the
integration user, as if its connected app had been authorized in a browser; the token acts as
that user. With refresh token rotation on, each use returns a new refresh token and retires the
old one (tap-salesforce then rewrites its config file).
"""

from __future__ import annotations

import secrets
import threading

REFRESH_TOKEN_PREFIX = "5Aep861"  # noqa: S105 - a public prefix, not a secret
"""How Salesforce refresh tokens begin (what operators recognise in a config file)."""


class RefreshTokens:
    """Refresh tokens issued to the connected app, each acting as the user who authorized it.

    Args:
        rotate: Refresh token rotation: each redemption issues a new token and revokes the old.
    """

    def __init__(self, *, rotate: bool = False) -> None:
        self.rotate = rotate
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, token: str, username: str) -> None:
        """Record a refresh token, as the browser authorization of ``username`` would.

        Args:
            token: The refresh token.
            username: The user the token acts as.
        """
        with self._lock:
            self._owners[token] = username

    def revoke(self, token: str) -> None:
        """Revoke a refresh token (an admin's "Revoke" on the connected app's OAuth usage).

        Args:
            token: The refresh token; unknown tokens are ignored.
        """
        with self._lock:
            self._owners.pop(token, None)

    def redeem(self, token: str) -> tuple[str, str | None] | None:
        """Check a refresh token presented at the token endpoint.

        Args:
            token: The ``refresh_token`` form field.

        Returns:
            ``(username, new_refresh_token)`` (the new token only with rotation), or None when
            the token is unknown or revoked (the caller answers ``invalid_grant``).
        """
        with self._lock:
            username = self._owners.get(token)
            if username is None:
                return None
            if not self.rotate:
                return username, None
            del self._owners[token]
            renewed = REFRESH_TOKEN_PREFIX + secrets.token_urlsafe(60)
            self._owners[renewed] = username
            return username, renewed
