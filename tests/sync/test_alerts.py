"""Alerts: the state machine, delivery by webhook and SMTP, failures that never crash anything,
secrets kept out of messages and logs."""

from __future__ import annotations

import io
import json
import logging
import socket
from datetime import datetime, timedelta

import pytest
from aiosmtpd.controller import Controller

from connector.store import Store
from sync.alerts import Condition, evaluate, job_conditions, transition
from sync.config import load_settings
from sync.logs import configure_logging, run_context, secret_values

from .conftest import write_config

T = datetime(2025, 6, 1, 12, 0)


def test_state_machine_fires_on_change_only_and_retries_undelivered():
    up = Condition("failed:push", True, "push failed", "boom")
    down = Condition("failed:push", False, "push failed", "push finished ok")
    # never seen and fine: nothing to store, nothing to say
    assert transition(None, down, T) == (None, None)
    state, note = transition(None, up, T)
    assert note.state == "firing" and state["active"] and not state["notified"]
    delivered = {**state, "notified": True}
    assert transition(delivered, up, T + timedelta(minutes=5)) == (None, None)
    # undelivered: the same FIRING goes out again, with its original time
    again, note = transition(state, up, T + timedelta(minutes=5))
    assert note.state == "firing" and note.since == T and again["since"] == T
    state, note = transition(delivered, down, T + timedelta(minutes=9))
    assert note.state == "resolved" and not state["active"]


def test_job_conditions_cover_failure_rejections_and_the_quality_gate(tmp_path):
    settings = load_settings(
        write_config(tmp_path, "\n[alerts]\nmax_rejected_share = 0.05\n"), environ={}
    )
    failed = job_conditions("push", "failed", {}, "push: boom", settings)
    assert [(c.key, c.active) for c in failed] == [("failed:push", True)]
    ok = job_conditions("push", "partial", {"written": 90, "failed": 10}, None, settings)
    assert [(c.key, c.active) for c in ok] == [("failed:push", False), ("rejected:push", True)]
    assert "10 of 100" in ok[1].title
    few = job_conditions("sync", "partial", {"written": 99, "failed": 1}, None, settings)
    assert ("rejected:sync", False) in [(c.key, c.active) for c in few]
    # the shape run_train reports: the quality gate's decision and reason
    rejected = {"version": "v2", "champion": False}
    rejected["gate"] = {"promote": False, "reason": "holdout auc 0.7000 is worse than 0.7200"}
    gate = job_conditions("train", "ok", {"predictions": {"lc": rejected}}, None, settings)
    assert ("gate:lc", True) in [(c.key, c.active) for c in gate]
    (condition,) = [c for c in gate if c.key == "gate:lc"]
    assert "holdout auc 0.7000 is worse than 0.7200" in condition.detail
    assert "promote" not in condition.detail
    assert job_conditions("sync", "skipped", {}, "busy", settings) == []


def test_unreachable_webhook_is_a_warning_and_the_alert_is_retried(tmp_path, webhook, caplog):
    # a port nobody listens on
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}/services/T0/B0/s3cretTokenXYZ"
    config = write_config(tmp_path, "", f'[alerts]\nwebhook_url = "{dead}"\n')
    settings = load_settings(config, environ={})
    condition = Condition("failed:sync", True, "sync failed", "details")
    with Store(settings.store.path) as store, caplog.at_level(logging.WARNING):
        notes = evaluate(store, settings, [condition], now=T)
    assert [n.state for n in notes] == ["firing"]
    assert "alert webhook at 127.0.0.1 is unreachable" in caplog.text
    assert "s3cretTokenXYZ" not in caplog.text

    # the webhook is back: the pending FIRING is delivered once
    settings = load_settings(
        write_config(tmp_path, "", f'[alerts]\nwebhook_url = "{webhook.url}"\n'), environ={}
    )
    with Store(settings.store.path) as store:
        evaluate(store, settings, [condition], now=T + timedelta(minutes=1))
        evaluate(store, settings, [condition], now=T + timedelta(minutes=2))
    assert len(webhook.texts) == 1 and webhook.texts[0].startswith("[leadscore] FIRING: sync")


def test_a_webhook_answering_404_is_reported_once_and_not_retried(tmp_path, webhook, caplog):
    webhook.status = 404
    config = write_config(tmp_path, "", f'[alerts]\nwebhook_url = "{webhook.url}"\n')
    settings = load_settings(config, environ={})
    condition = Condition("failed:sync", True, "sync failed", "details")
    with Store(settings.store.path) as store, caplog.at_level(logging.WARNING):
        evaluate(store, settings, [condition], now=T)
        evaluate(store, settings, [condition], now=T + timedelta(minutes=1))
        evaluate(store, settings, [condition], now=T + timedelta(minutes=2))
    assert len(webhook.texts) == 1  # sent once; a 404 does not heal by sending again
    assert "answered HTTP 404" in caplog.text and "not sent again" in caplog.text


class Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    with socket.socket() as probe:  # aiosmtpd checks readiness by connecting: it needs a port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def test_email_alerts_through_smtp_with_secrets_redacted(tmp_path, smtp):
    inbox, port = smtp
    config = write_config(
        tmp_path,
        f"""
[alerts]
email_to = ["ops@example.com"]
email_from = "leadscore@example.com"
smtp_host = "127.0.0.1"
smtp_port = {port}
smtp_security = "none"
""",
        '[salesforce]\nclient_secret = "sf-Secret-4242"\n',
    )
    settings = load_settings(config, environ={})
    leaked = Condition("failed:pull", True, "pull failed", "login rejected for sf-Secret-4242")
    with Store(settings.store.path) as store:
        evaluate(store, settings, [leaked], now=T)
        evaluate(store, settings, [leaked], now=T + timedelta(minutes=1))
        evaluate(store, settings, [Condition("failed:pull", False, "pull failed")], now=T)
    assert len(inbox.messages) == 2
    first = inbox.messages[0].decode()
    assert "Subject: [leadscore] FIRING: pull failed" in first
    assert "sf-Secret-4242" not in first and "***" in first
    assert "Subject: [leadscore] RESOLVED: pull failed" in inbox.messages[1].decode()


def test_smtp_server_down_is_a_clear_warning(tmp_path, caplog):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = write_config(
        tmp_path,
        f"""
[alerts]
email_to = ["ops@example.com"]
email_from = "leadscore@example.com"
smtp_host = "127.0.0.1"
smtp_port = {port}
smtp_security = "none"
""",
    )
    settings = load_settings(config, environ={})
    with Store(settings.store.path) as store, caplog.at_level(logging.WARNING):
        evaluate(store, settings, [Condition("failed:pull", True, "pull failed")], now=T)
        states = store.query_df("SELECT notified FROM alert_state")
    assert f"alert email through 127.0.0.1:{port} failed (ConnectionRefusedError)" in caplog.text
    assert states["notified"].tolist() == [False]


def test_json_logs_carry_the_run_id_and_never_a_secret(tmp_path):
    settings = load_settings(
        write_config(
            tmp_path,
            "",
            '[salesforce]\nclient_secret = "sf-Secret-4242"\n'
            '[alerts]\nwebhook_url = "https://hooks.example.com/services/T0/B0/s3cretTokenXYZ"\n',
        ),
        environ={},
    )
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging(fmt="json", secrets=secret_values(settings), stream=stream)
        log = logging.getLogger("leadscore.test")
        with run_context("sync", 42), run_context("pull", 43):  # the outermost run wins
            log.info("token %s", "sf-Secret-4242")
            logging.getLogger("urllib3").warning("POST /services/T0/B0/s3cretTokenXYZ failed")
            log.info("Authorization: Bearer 00Dxx0000001gPL!AR8AQJXg5oRRA.abcdefghijklmnop")
        log.info("outside a run")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(x["job"], x["run_id"]) for x in lines[:3]] == [("sync", 42)] * 3
    assert lines[3]["run_id"] is None
    text = stream.getvalue()
    assert "sf-Secret-4242" not in text and "s3cretTokenXYZ" not in text
    assert "AR8AQJXg5oRRA" not in text and text.count("***") >= 3
