"""Outgoing notifications: a Slack-compatible webhook and SMTP email.

Both raise a one-line :class:`~connector.errors.TransientError` when the destination cannot be
reached or fails for now (the caller keeps the alert pending and tries again later), and a
:class:`~connector.errors.ConfigError` when retrying cannot help (a webhook answering 404). Neither
ever puts the webhook URL (which embeds a token) or the SMTP password in a message: the webhook is
named by its host only.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from email.message import EmailMessage
from urllib.parse import urlparse

import requests

from connector.errors import (
    ConfigError,
    Kind,
    TransientError,
    classify_exception,
    classify_status,
)
from connector.http import HttpSettings, make_session


def webhook_host(url: str) -> str:
    """The host of a webhook URL, safe to show (the path carries the token).

    Args:
        url: the webhook URL.

    Returns:
        ``hooks.slack.com`` or ``(invalid URL)``.
    """
    return urlparse(url).hostname or "(invalid URL)"


def send_webhook(
    url: str,
    text: str,
    *,
    timeout_seconds: float = 10.0,
    ca_bundle: str | None = None,
    max_attempts: int = 2,
    max_backoff_seconds: float = 2.0,
) -> None:
    """Post ``{"text": ...}`` to a Slack-compatible incoming webhook.

    https://api.slack.com/messaging/webhooks - Mattermost and Rocket.Chat accept the same body.

    Args:
        url: the webhook URL (a secret).
        text: the message (Slack mrkdwn).
        timeout_seconds: connect and read timeout.
        ca_bundle: CA bundle to trust instead of the system store (tests, private CAs).
        max_attempts: attempts when the webhook fails transiently (``alerts.webhook_attempts``).
        max_backoff_seconds: the longest wait between attempts.

    Raises:
        ConfigError: the URL is not http(s), or the webhook refused the message for good.
        TransientError: the webhook could not be reached or answered a transient error.
    """
    parsed = urlparse(url)
    host = webhook_host(url)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ConfigError(
            "alerts.webhook_url is not an http(s) URL", hint="paste the webhook URL as given"
        )
    settings = HttpSettings(
        timeout_seconds=timeout_seconds,
        max_attempts=max_attempts,
        max_backoff_seconds=max_backoff_seconds,
        ca_bundle=ca_bundle,
        resend_non_idempotent=True,
    )
    with make_session(settings) as session:
        try:
            response = session.post(url, json={"text": text})
        except requests.RequestException as exc:
            rule = classify_exception(exc)
            if rule is not None and rule.kind is Kind.CONFIG:  # TLS: the operator must act
                raise ConfigError(
                    f"alert webhook at {host}: {rule.meaning}", hint="check alerts.webhook_url"
                ) from None
            raise TransientError(
                f"alert webhook at {host} is unreachable ({type(exc).__name__})",
                hint="check alerts.webhook_url and the network; the alert is retried later",
            ) from None
    if response.status_code >= 300:
        # The one error table decides: 5xx, 408 and 429 heal by themselves and the alert is sent
        # again later; any other answer (404: the webhook was deleted) will not change by
        # retrying, so it is reported once as a configuration problem.
        rule = classify_status(response.status_code)
        if rule.kind is Kind.TRANSIENT:
            raise TransientError(
                f"alert webhook at {host} answered HTTP {response.status_code}",
                hint="check alerts.webhook_url; the alert is retried later",
            )
        raise ConfigError(
            f"alert webhook at {host} answered HTTP {response.status_code} ({rule.meaning})",
            hint="fix alerts.webhook_url; this alert is not sent again",
        )


def send_email(
    *,
    host: str,
    port: int,
    security: str,
    sender: str,
    recipients: Sequence[str],
    subject: str,
    body: str,
    username: str | None = None,
    password: str | None = None,
    timeout_seconds: float = 10.0,
) -> None:
    """Send a plain-text email through SMTP.

    Args:
        host: SMTP server.
        port: its port.
        security: ``starttls``, ``ssl`` (implicit TLS) or ``none``.
        sender: From address.
        recipients: To addresses.
        subject: subject line.
        body: plain text.
        username: login, if the server needs one.
        password: password (a secret).
        timeout_seconds: socket timeout.

    Raises:
        TransientError: the server could not be reached or refused the message.
    """
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(body)
    context = ssl.create_default_context()
    try:
        client: smtplib.SMTP
        if security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout_seconds, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout_seconds)
        with client:
            if security == "starttls":
                client.starttls(context=context)
            if username:
                client.login(username, password or "")
            client.send_message(message)
    except (TimeoutError, smtplib.SMTPException, OSError) as exc:
        reason = (
            f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
            if isinstance(exc, smtplib.SMTPResponseException)
            else type(exc).__name__
        )
        raise TransientError(
            f"alert email through {host}:{port} failed ({reason})",
            hint="check alerts.smtp_host, smtp_port, smtp_security and the credentials; "
            "the alert is retried later",
        ) from None
