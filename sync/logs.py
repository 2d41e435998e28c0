"""Logging for an unattended service: JSON lines with the run id on every line, secrets redacted.

- :func:`run_context` sets the job and run id (the run log's id of the outermost job) for every log
  line emitted while a job runs, in whatever module emits it.
- :class:`RedactingFilter` replaces every configured secret value, and anything shaped like a bearer
  token or an OAuth token field, with ``***`` before a line is written. It sits on the handler, so
  it also covers third-party loggers.
- :func:`configure_logging` installs either a text or a JSON-lines handler on stderr.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlparse

from pydantic import BaseModel, SecretStr

_RUN: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "leadscore_run", default=None
)

REDACTED = "***"
# Tokens that may show up in URLs, headers or exception texts even though leadscore never logs them
# on purpose: bearer tokens, OAuth form fields, Salesforce session ids (00D...!...).
_TOKEN_PATTERNS = (
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/!=-]{8,}"),
    re.compile(
        r"(?i)((?:access_token|refresh_token|client_secret|password|session_id)[\"']?\s*[=:]\s*"
        r"[\"']?)[^\s\"'&,}]+"
    ),
    re.compile(r"\b00D[A-Za-z0-9]{12,15}![A-Za-z0-9._]{20,}"),
    # personal data: email addresses (plain or URL-encoded) in URLs and messages
    re.compile(r"[A-Za-z0-9._%+-]+(?:@|%40)[A-Za-z0-9.-]+\.[A-Za-z]{2,}"),
)


def current_run() -> dict[str, Any] | None:
    """The job and run id of the job running in this context, if any.

    Returns:
        ``{"job": ..., "run_id": ...}`` or None.
    """
    return _RUN.get()


@contextmanager
def run_context(job: str, run_id: int | str) -> Iterator[None]:
    """Tag every log line in the block with the job and run id (outermost job wins).

    Args:
        job: job name.
        run_id: the run's id in the run log.

    Yields:
        Nothing.
    """
    if _RUN.get() is not None:
        yield
        return
    token = _RUN.set({"job": job, "run_id": run_id})
    try:
        yield
    finally:
        _RUN.reset(token)


def secret_values(settings: BaseModel) -> list[str]:
    """Every ``SecretStr`` value in a settings tree.

    Args:
        settings: the settings (or any pydantic model).

    Returns:
        The secret values (non-empty strings).
    """
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                found.append(secret)
                # A webhook URL's token is its path: HTTP debug lines log paths without the host.
                parsed = urlparse(secret)
                if parsed.scheme and len(parsed.path) >= 8:
                    found.append(parsed.path)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(settings)
    return found


class Redactor:
    """Replaces secret values and token-shaped strings in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Remember the secrets to hide.

        Args:
            secrets: exact values to hide (longest first, so a secret inside another goes too).
        """
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """Redact a text.

        Args:
            text: any text.

        Returns:
            The text with secrets replaced by ``***``.
        """
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        for pattern in _TOKEN_PATTERNS:
            text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + REDACTED, text)
        return text


class RedactingFilter(logging.Filter):
    """A handler filter that renders each record's message once and redacts it."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the message, arguments and exception text in place.

        Args:
            record: the record.

        Returns:
            Always True (records are changed, never dropped).
        """
        record.msg = self.redactor(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        return True


class RunContextFilter(logging.Filter):
    """Adds ``job`` and ``run_id`` attributes (None outside a job) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Attach the current run.

        Args:
            record: the record.

        Returns:
            Always True.
        """
        run = _RUN.get() or {}
        record.job = run.get("job")
        record.run_id = run.get("run_id")
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts, level, logger, message, job, run_id`` (+ ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render a record.

        Args:
            record: the record (already through the filters).

        Returns:
            The JSON line.
        """
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "job": getattr(record, "job", None),
            "run_id": getattr(record, "run_id", None),
        }
        if record.exc_text:
            data["exc"] = record.exc_text
        return json.dumps(data, default=str)


class TextFormatter(logging.Formatter):
    """``2025-06-01 12:00:05 INFO leadscore.jobs [sync #12] message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(run)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render a record with its run tag.

        Args:
            record: the record.

        Returns:
            The line.
        """
        job, run_id = getattr(record, "job", None), getattr(record, "run_id", None)
        record.run = f" [{job} #{run_id}]" if job else ""
        return super().format(record)


def configure_logging(
    *,
    fmt: str = "text",
    level: int = logging.INFO,
    secrets: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send log lines to stderr as text or JSON lines, with run ids and secrets redacted.

    Replaces the root logger's handlers (the CLI's default one included).

    Args:
        fmt: ``text`` or ``json``.
        level: root level.
        secrets: values that must never appear.
        stream: where to write (default stderr).

    Returns:
        The installed handler.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RunContextFilter())
    handler.addFilter(RedactingFilter(Redactor(secrets)))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Third-party loggers stay at WARNING: their debug lines carry URLs with query strings.
    for noisy in ("urllib3", "simple_salesforce"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    return handler


def redact_root_handlers(secrets: Iterable[str]) -> None:
    """Redact secrets from every line the root logger's handlers write, for every command.

    ``serve`` installs its own handler (:func:`configure_logging`); the other commands keep the
    CLI's default handler, which gets the same filter here once the settings (and so the secret
    values) are known.

    Args:
        secrets: values that must never appear.
    """
    redactor = Redactor(secrets)
    for handler in logging.getLogger().handlers:
        for old in [f for f in handler.filters if isinstance(f, RedactingFilter)]:
            handler.removeFilter(old)
        handler.addFilter(RedactingFilter(redactor))
