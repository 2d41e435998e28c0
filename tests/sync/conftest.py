"""Fixtures for the operations tests: a local webhook receiver and a minimal config."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


class Webhook:
    """A Slack-compatible webhook receiver on 127.0.0.1 that records what it is sent."""

    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                outer.messages.append(
                    {"path": self.path, "body": json.loads(self.rfile.read(length))}
                )
                self.send_response(outer.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        # the path plays the part of Slack's secret token
        return f"http://127.0.0.1:{self.server.server_address[1]}/services/T0/B0/s3cretTokenXYZ"

    @property
    def texts(self) -> list[str]:
        return [m["body"]["text"] for m in self.messages]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


MINIMAL = """
[store]
path = "store/leadscore.duckdb"
models_dir = "store/models"

[salesforce]
login_url = "https://login.salesforce.com"
[salesforce.streams.Lead]
fields = ["Industry"]

[[predictions]]
name = "lead_conversion"
label = { event = "converted", within_days = 30 }
"""


def write_config(directory: Path, extra: str = "", secrets: str = "") -> Path:
    """A config with a store in ``directory`` and optional extra sections."""
    config = directory / "config.toml"
    config.write_text(MINIMAL + extra)
    if secrets:
        (directory / "secrets.toml").write_text(secrets)
    return config
