"""Login and the session: OAuth and SOAP flows, re-login, simple-salesforce errors translated."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import jwt
import requests
from pydantic import SecretStr
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed, SalesforceError
from simple_salesforce.login import soap_login

from connector.errors import (
    ConfigError,
    LeadscoreError,
    RequestError,
    TransientError,
    classify_exception,
    classify_status,
    error_for,
    response_error,
)
from connector.http import Budget, CallCounter, HttpSettings, TokenAuth, make_session
from connector.salesforce.settings import JWT_GRANT, SalesforceSettings

if TYPE_CHECKING:
    from connector.salesforce.describe import ObjectDescription


log = logging.getLogger("leadscore.salesforce")


# Per flow: the settings it needs (secrets named by their env variable in messages).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "client_credentials": ("client_id", "client_secret"),
    "jwt": ("client_id", "username", "private_key_file"),
    "refresh_token": ("client_id", "client_secret", "refresh_token"),
    "password": ("client_id", "client_secret", "username", "password"),
    "soap": ("username", "password"),
}
_SECRETS = frozenset({"client_id", "client_secret", "refresh_token", "password", "security_token"})


class SalesforceClient:
    """A connected org: our session (retries, TLS, token refresh, accounting) and the client."""

    def __init__(
        self,
        settings: SalesforceSettings,
        *,
        counter: CallCounter | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Prepare a client; the first call (or :meth:`connect`) logs in.

        Args:
            settings: the ``[salesforce]`` section.
            counter: call counter shared with the run; a new one when omitted.
            sleep: how to wait between retries and bulk polls (tests pass a no-op).
        """
        self.settings = settings
        self.counter = counter if counter is not None else CallCounter()
        self.sleep = sleep
        http = HttpSettings(
            timeout_seconds=settings.timeout_seconds,
            max_attempts=settings.max_attempts,
            ca_bundle=str(settings.ca_bundle) if settings.ca_bundle else None,
        )
        self._login_session = make_session(
            http, counter=self.counter, is_auth_url=lambda url: True, sleep=sleep
        )
        self.instance_url: str | None = None
        self._auth = TokenAuth(self._fetch_token)
        self._rotated_refresh_token: str | None = None
        self._usage_lock = threading.Lock()
        self._usage_read = False  # /limits is read once per client (it may be refused: 403)
        self.budget = Budget(
            settings.max_calls_per_run,
            settings.max_share_of_daily_limit,
            setting="salesforce",
            read_usage=self._read_usage,
        )
        self.session = make_session(
            http,
            counter=self.counter,
            budget=self.budget,
            auth=self._auth,
            sleep=sleep,
            is_uncounted_url=_is_limits_url,
        )
        if settings.duplicate_rule_allow_save:
            # Active duplicate rules then let writes save records they flag
            # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_duplicaterules.htm
            self.session.headers["Sforce-Duplicate-Rule-Header"] = "allowSave=true"
        self.user_id: str | None = None
        """The user the session acts as (from the OAuth identity URL), once logged in."""
        self.org_id: str | None = None
        """The org (tenant) id, from the OAuth identity URL, once logged in."""
        self._sf: Salesforce | None = None
        self._describes: dict[str, ObjectDescription] = {}
        self._limits: dict[str, dict[str, int]] | None = None
        self.logins = 0
        """Sessions obtained so far (the first login plus refreshes)."""

    def _read_usage(self, counter: CallCounter) -> None:
        """Learn the org's API usage from ``/limits`` before this run's first counted call.

        Without it the first call of every run (a describe) was spent before its usage header
        told the budget that the share was reached: a scheduled run every few seconds drove the
        org to its hard limit. ``/limits`` itself does not count against the allowance.

        Args:
            counter: the run's counter, whose ``org_usage`` this sets.
        """
        with self._usage_lock:
            if counter.org_usage is not None or self._usage_read:
                return  # another thread read it meanwhile, or /limits is not readable here
            self._usage_read = True
            try:
                _ = self._auth.token  # log in first: the instance URL comes with the token
                url = f"{self.instance_url}/services/data/v{self.settings.api_version}/limits/"
                response = self.session.get(url)
                if response.status_code < 300:
                    body = response.json()
                    daily = body.get("DailyApiRequests") if isinstance(body, dict) else None
                    if isinstance(daily, dict) and daily.get("Max"):
                        total = int(daily["Max"])
                        counter.org_usage = (total - int(daily.get("Remaining") or 0), total)
                    self._limits = {k: dict(v) for k, v in body.items() if isinstance(v, dict)}
            except (requests.RequestException, ValueError) as exc:
                # The call that follows fails the same way and says so; the budget still
                # applies from its usage header on.
                log.debug("reading /limits failed: %s", type(exc).__name__)

    def refresh_usage(self) -> tuple[int, int] | None:
        """Read the org's API usage again (``/limits``, which does not count against it).

        A client kept for a long time (the fresh job's change data capture trigger) stops at
        the daily share and must learn when the 24-hour window has made room again; until the
        next counted call, only ``/limits`` can tell it.

        Returns:
            (used, max) of the daily allowance, or None when ``/limits`` could not be read.
        """
        with self._usage_lock:
            self._usage_read = False
            self.counter.org_usage = None
        self._read_usage(self.counter)
        return self.counter.org_usage

    def connect(self) -> SalesforceClient:
        """Log in now, so that bad credentials or URLs fail before any work starts.

        Returns:
            The client.

        Raises:
            ConfigError: the login was rejected or the login URL is wrong.
            TransientError: Salesforce could not be reached.
        """
        _ = self.sf
        return self

    @property
    def sf(self) -> Salesforce:
        """The simple-salesforce client in direct mode (built on first use)."""
        if self._sf is None:
            token = self._auth.token
            assert self.instance_url is not None
            self._sf = Salesforce(
                instance_url=self.instance_url,
                session_id=token,
                session=self.session,
                version=self.settings.api_version,
            )
        return self._sf

    @property
    def access_token(self) -> str:
        """The current access token (logging in first if needed); never log it."""
        return self._auth.token

    def renew_token(self, stale: str) -> None:
        """Log in again after ``stale`` was rejected (unless another caller already did).

        Args:
            stale: The rejected token.
        """
        self._auth.refresh(stale)

    @property
    def tenant_id(self) -> str:
        """The org id the Pub/Sub API expects as ``tenantid`` (logging in first if needed).

        From the OAuth identity URL; a SOAP session has none, and then the session id's prefix
        before ``!``, which is the org id in Salesforce session ids.
        """
        token = self.access_token
        return self.org_id or token.split("!", 1)[0]

    def forget_describes(self) -> None:
        """Drop cached describes (after fields were created or changed)."""
        self._describes.clear()

    def close(self) -> None:
        """Close the HTTP sessions."""
        self.session.close()
        self._login_session.close()

    def __enter__(self) -> SalesforceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # The login flows. Each returns (access token, instance URL).

    def _fetch_token(self) -> str:
        s = self.settings
        self._require_credentials()
        flows: dict[str, Callable[[], tuple[str, str]]] = {
            "client_credentials": self._login_client_credentials,
            "jwt": self._login_jwt,
            "refresh_token": self._login_refresh_token,
            "password": self._login_password,
            "soap": self._login_soap,
        }
        token, instance = flows[s.auth]()
        self.instance_url = instance.rstrip("/")
        self.logins += 1
        log.info("logged in to %s (%s)", self.instance_url, s.auth)
        return token

    def _require_credentials(self) -> None:
        s = self.settings
        missing = [name for name in _REQUIRED[s.auth] if getattr(s, name) in (None, "")]
        if not missing:
            return
        secrets = [f"LEADSCORE_SALESFORCE__{name.upper()}" for name in missing if name in _SECRETS]
        plain = [f"salesforce.{name}" for name in missing if name not in _SECRETS]
        hints = []
        if secrets:
            hints.append(f"set {' and '.join(secrets)}, or put them in secrets.toml")
        if plain:
            hints.append(f"set {', '.join(plain)} in the config file")
        raise ConfigError(
            f'Salesforce credentials are missing for auth = "{s.auth}": '
            + " and ".join(f"salesforce.{name}" for name in missing),
            hint="; ".join(hints),
        )

    @staticmethod
    def _secret(value: SecretStr | None) -> str:
        return value.get_secret_value() if value is not None else ""

    def _login_client_credentials(self) -> tuple[str, str]:
        """OAuth 2.0 client credentials.

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_client_credentials_flow.htm
        """
        s = self.settings
        return self._oauth(
            {"grant_type": "client_credentials"},
            auth=(self._secret(s.client_id), self._secret(s.client_secret)),
            hint="check the connected app's client id and secret and that the client-credentials "
            "flow is enabled for it",
        )

    def _login_jwt(self) -> tuple[str, str]:
        """OAuth 2.0 JWT bearer: an RS256 assertion signed with the connected app's key.

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm
        """
        s = self.settings
        assert s.private_key_file is not None
        try:
            key = Path(s.private_key_file).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"salesforce.private_key_file: cannot read {s.private_key_file} "
                f"({exc.strerror or type(exc).__name__})",
                hint="point it at the PEM private key of the connected app's certificate",
            ) from None
        claims = {
            "iss": self._secret(s.client_id),
            "sub": s.username,
            "aud": s.jwt_audience or _jwt_audience(s.login_url),
            # Salesforce accepts assertions that expire within 3 minutes.
            "exp": int(time.time()) + 180,
        }
        try:
            assertion = jwt.encode(claims, key, algorithm="RS256")
        except (ValueError, TypeError, jwt.PyJWTError):
            raise ConfigError(
                f"salesforce.private_key_file: {s.private_key_file} is not an RSA private key "
                "in PEM format",
                hint="export the key of the certificate registered with the connected app",
            ) from None
        return self._oauth(
            {"grant_type": JWT_GRANT, "assertion": assertion},
            hint="check salesforce.username, the connected app's client id, that its "
            "certificate matches salesforce.private_key_file and that the user is pre-authorized",
        )

    def _login_refresh_token(self) -> tuple[str, str]:
        """OAuth 2.0 refresh token flow: the integration user authorized the app once.

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_refresh_token_flow.htm
        With refresh token rotation on, every answer carries a new token and the old one stops
        working; leadscore keeps the new one for this run's later logins but cannot rewrite
        secrets.toml, so the connected app must have rotation off.
        """
        s = self.settings
        if self._rotated_refresh_token is None:
            self._rotated_refresh_token = self._secret(s.refresh_token)
        body: dict[str, Any] = {}
        token, instance = self._oauth(
            {
                "grant_type": "refresh_token",
                "client_id": self._secret(s.client_id),
                "client_secret": self._secret(s.client_secret),
                "refresh_token": self._rotated_refresh_token,
            },
            hint="check the connected app's client id and secret and that the refresh token "
            "was issued to that app and not revoked (Setup > Connected Apps OAuth Usage)",
            answer=body,
        )
        renewed = body.get("refresh_token")
        if isinstance(renewed, str) and renewed and renewed != self._rotated_refresh_token:
            self._rotated_refresh_token = renewed
            log.warning(
                "the connected app rotates refresh tokens: the configured one no longer works; "
                "turn rotation off for leadscore's connected app and authorize it again"
            )
        return token, instance

    def _login_password(self) -> tuple[str, str]:
        """OAuth 2.0 username-password (the security token is appended when set).

        https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_username_password_flow.htm
        """
        s = self.settings
        return self._oauth(
            {
                "grant_type": "password",
                "client_id": self._secret(s.client_id),
                "client_secret": self._secret(s.client_secret),
                "username": s.username,
                "password": self._secret(s.password) + self._secret(s.security_token),
            },
            hint="check salesforce.username, password, security token and the connected app's "
            "client id and secret",
        )

    def _oauth(
        self,
        data: dict[str, Any],
        *,
        hint: str,
        auth: tuple[str, str] | None = None,
        answer: dict[str, Any] | None = None,
    ) -> tuple[str, str]:
        s = self.settings
        url = f"{s.login_url}/services/oauth2/token"
        with translate_errors(f"Salesforce login at {s.login_url}", setting="salesforce.login_url"):
            response = self._login_session.post(
                url, data=data, auth=auth, headers={"Accept": "application/json"}
            )
        if response.status_code != 200:
            code, message = response_error(response)
            if response.status_code in (400, 401, 403):
                raise ConfigError(
                    f"Salesforce login at {s.login_url} was rejected: "
                    f"{code or response.status_code}" + (f" ({message})" if message else ""),
                    hint=hint,
                )
            rule = classify_status(response.status_code, code, message)
            raise error_for(
                rule,
                f"Salesforce login at {s.login_url} failed: "
                f"HTTP {response.status_code} {code or ''}".strip(),
                hint="check salesforce.login_url",
            )
        try:
            body = response.json()
            if answer is not None:
                answer.update(body)
            identity = body.get("id")
            if isinstance(identity, str) and "/" in identity:
                # https://login.salesforce.com/id/{orgId}/{userId}: the user the token acts as
                parts = identity.rstrip("/").rsplit("/", 2)
                self.user_id = parts[-1]
                self.org_id = parts[-2]
            return str(body["access_token"]), str(body["instance_url"])
        except (ValueError, KeyError, TypeError):
            raise ConfigError(
                f"{url} did not answer like a Salesforce OAuth token endpoint",
                hint="check salesforce.login_url",
            ) from None

    def _login_soap(self) -> tuple[str, str]:
        """SOAP partner ``login`` with username and password + security token.

        https://developer.salesforce.com/docs/atlas.en-us.api.meta/api/sforce_api_calls_login.htm
        """
        s = self.settings
        password = self._secret(s.password) + self._secret(s.security_token)
        body = (
            '<?xml version="1.0" encoding="utf-8" ?>'
            '<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:urn="urn:partner.soap.sforce.com">'
            "<env:Header><urn:CallOptions><urn:client>leadscore</urn:client>"
            "</urn:CallOptions></env:Header><env:Body>"
            '<n1:login xmlns:n1="urn:partner.soap.sforce.com">'
            f"<n1:username>{escape(s.username or '')}</n1:username>"
            f"<n1:password>{escape(password)}</n1:password>"
            "</n1:login></env:Body></env:Envelope>"
        )
        url = f"{s.login_url}/services/Soap/u/{s.api_version}"
        headers = {"content-type": "text/xml", "charset": "UTF-8", "SOAPAction": "login"}
        try:
            with translate_errors(
                f"Salesforce login at {s.login_url}", setting="salesforce.login_url"
            ):
                # simple-salesforce's own parser of the partner login answer.
                token, instance = soap_login(url, body, headers, None, self._login_session)
        except SalesforceAuthenticationFailed as exc:
            if isinstance(exc.code, int) and exc.code >= 500:
                raise TransientError(
                    f"Salesforce login at {s.login_url} failed: HTTP {exc.code}",
                    hint="check salesforce.login_url; the next run retries",
                ) from None
            raise ConfigError(
                f"Salesforce login at {s.login_url} was rejected: {exc.code} "
                f"({exc.auth_message.strip()[:200]})",
                hint="check salesforce.username, the password and the security token",
            ) from None
        return token, f"https://{instance}"


def _is_limits_url(url: str) -> bool:
    """``/services/data/vXX.X/limits``: reading the allowance does not spend it."""
    return urlparse(url).path.rstrip("/").endswith("/limits")


def _jwt_audience(login_url: str) -> str:
    """The JWT ``aud`` Salesforce expects: the test (sandbox org) or the production login host."""
    host = urlparse(login_url).hostname or ""
    if host == "test.salesforce.com" or host.endswith(".sandbox.my.salesforce.com"):
        return "https://test.salesforce.com"
    return "https://login.salesforce.com"


@contextmanager
def translate_errors(what: str, *, setting: str = "salesforce") -> Iterator[None]:
    """Turn simple-salesforce and requests exceptions into one-line leadscore errors.

    Args:
        what: what was being done, for the message (e.g. "query on Lead").
        setting: config key to name for transport and TLS failures.

    Yields:
        Nothing; wraps the block.
    """
    try:
        yield
    except LeadscoreError:
        raise
    except SalesforceAuthenticationFailed:
        raise
    except SalesforceError as exc:
        content: Any = exc.content
        if isinstance(content, list) and content and isinstance(content[0], dict):
            content = content[0]
        code = content.get("errorCode") if isinstance(content, dict) else None
        message = content.get("message", "") if isinstance(content, dict) else str(content)[:200]
        rule = classify_status(exc.status, code, message)
        raise error_for(
            rule,
            f"{what} failed: {code or exc.status}: {message}".rstrip(": "),
            hint=rule.meaning,
        ) from None
    except requests.RequestException as exc:
        rule = classify_exception(exc)
        host = (
            urlparse(exc.request.url).netloc if exc.request is not None and exc.request.url else ""
        )
        if rule is not None and rule.code == "SSLError":
            raise ConfigError(
                f"{what}: TLS verification of {host} failed",
                hint="set salesforce.ca_bundle to the CA that signed its certificate, "
                f"or check {setting}",
            ) from None
        reason = type(exc).__name__
        if rule is None:
            raise RequestError(f"{what} failed: {reason}") from None
        if rule.code == "SSLConnectionClosed":
            raise error_for(
                rule,
                f"{what}: {rule.meaning} ({host}): the server closed the connection while the "
                "request was being sent",
                hint="a request body over the server's limit or a proxy cutting long uploads; "
                "the next run retries",
            ) from None
        raise error_for(
            rule,
            f"{what}: {rule.meaning} ({host}, {reason})",
            hint=f"check {setting} and the network; the next run retries",
        ) from None
