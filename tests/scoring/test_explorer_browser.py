"""The threshold explorer in a real headless Chromium, driven over the DevTools protocol.

The page is opened from a file (no network), the slider is moved with the keyboard as a user
would, and the displayed figures must equal what Python computes for that cut-off. Console
errors and uncaught exceptions fail the test. Without Chromium the test skips locally with the
reason, and fails in CI (CI=true), where `.ci/run` installs it from the system packages.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from scoring.explorer import explorer_data, explorer_html, figures_at, format_figures

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    reason = "no Chromium on PATH (install the system package: apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the browser test: {reason}")
    pytest.skip(reason)


class DevTools:
    """A minimal Chrome DevTools protocol client over one page's websocket."""

    def __init__(self, url: str) -> None:
        import websocket  # websocket-client, a dev dependency

        self.ws = websocket.create_connection(url, timeout=20)
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, method: str, timeout: float = 20) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            self.events.append(message)
            if message.get("method") == method:
                return message
        raise TimeoutError(method)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def errors(self) -> list[str]:
        found = []
        for event in self.events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params["exceptionDetails"])[:300])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in (
                "error",
                "assert",
            ):
                found.append(json.dumps(params.get("args"))[:300])
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(params["entry"].get("text", "")[:300])
        return found

    def close(self) -> None:
        self.ws.close()


@pytest.fixture
def chromium(tmp_path: Path):
    binary = _browser()
    process = subprocess.Popen(
        [
            binary,
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
            f"--user-data-dir={tmp_path / 'profile'}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = None
        deadline = time.monotonic() + 30
        assert process.stderr is not None
        while time.monotonic() < deadline and port is None:
            line = process.stderr.readline()
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                port = int(match.group(1))
            elif not line and process.poll() is not None:
                break
        assert port, "Chromium did not start its DevTools endpoint"
        pages = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(p for p in pages if p["type"] == "page")
        tools = DevTools(page["webSocketDebuggerUrl"])
        yield tools
        tools.close()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_slider_shows_the_figures_python_computes(chromium: DevTools, tmp_path: Path):
    rng = np.random.default_rng(7)
    p = rng.beta(2, 5, 400)
    y = (rng.random(400) < p).astype(int)
    recent = rng.beta(2, 5, 700)
    data = explorer_data(y, p, recent, 14, {"A": 0.6, "B": 0.35, "C": 0.15})
    page = tmp_path / "explorer.html"
    page.write_text(
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>explorer</title>"
        f"</head><body>{explorer_html(data)}</body></html>",
        encoding="utf-8",
    )
    chromium.call("Runtime.enable")
    chromium.call("Log.enable")
    chromium.call("Page.enable")
    chromium.call("Page.navigate", url=page.as_uri())
    chromium.wait_for("Page.loadEventFired")

    def shown() -> dict[str, str]:
        return chromium.evaluate(
            "Object.fromEntries([...document.querySelectorAll('[data-out]')]"
            ".map(e => [e.dataset.out, e.textContent]))"
        )

    # Starts at the best tier's cut-off.
    start = shown()
    expected = format_figures(figures_at(y, p, recent, 14, 0.60))
    assert {k: start[k] for k in expected} == expected
    assert start["tier"] == "tier A"

    # Move the slider down 25 points with the keyboard, as a user would.
    chromium.evaluate("document.querySelector('input[type=range]').focus()")
    for _ in range(25):
        for kind in ("keyDown", "keyUp"):
            chromium.call(
                "Input.dispatchKeyEvent",
                type=kind,
                key="ArrowLeft",
                code="ArrowLeft",
                windowsVirtualKeyCode=37,
            )
    assert chromium.evaluate("document.querySelector('input[type=range]').value") == "35"
    moved = shown()
    expected = format_figures(figures_at(y, p, recent, 14, 0.35))
    assert {k: moved[k] for k in expected} == expected
    assert moved["tier"] == "tier B"
    assert moved["per-day"] != start["per-day"]
    assert chromium.errors() == []
