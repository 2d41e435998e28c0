"""Fixtures: small sandboxes on port 0 and real simple-salesforce clients over HTTPS."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from simple_salesforce import Salesforce

from connector.sandbox import Sandbox
from connector.sandbox.clients import CaSession

AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
SMALL_LEADS = 300
PAGE_SIZE = 50


def password_token(sandbox: Sandbox, session: requests.Session) -> str:
    """Get an access token with the OAuth username-password flow."""
    info = sandbox.info
    response = session.post(
        f"{sandbox.url}/services/oauth2/token",
        data={
            "grant_type": "password",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
            "username": info["username"],
            "password": info["password"],
        },
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def connect(sandbox: Sandbox) -> Salesforce:
    """A direct-mode simple-salesforce client with a fresh token and CA-trusting session."""
    session = CaSession(sandbox.info["ca_bundle"])
    token = password_token(sandbox, session)
    return Salesforce(instance_url=sandbox.url, session_id=token, session=session)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """A small read-mostly org shared by the session (tests must not rely on its writes)."""
    workdir: Path = tmp_path_factory.mktemp("sandbox")
    with Sandbox(workdir, leads=SMALL_LEADS, seed=7, as_of=AS_OF, page_size=PAGE_SIZE) as box:
        yield box


@pytest.fixture
def writable(tmp_path: Path) -> Iterator[Sandbox]:
    """A fresh tiny org per test, for tests that write; its integration user may not edit converted
    leads, so that ``CANNOT_UPDATE_CONVERTED_LEAD`` can be tested."""
    with Sandbox(
        tmp_path, leads=80, seed=3, as_of=AS_OF, page_size=PAGE_SIZE, edit_converted_leads=False
    ) as box:
        yield box


@pytest.fixture(scope="session")
def sf(sandbox: Sandbox) -> Salesforce:
    """A client of the shared sandbox."""
    return connect(sandbox)


@pytest.fixture
def wsf(writable: Sandbox) -> Salesforce:
    """A client of the per-test sandbox."""
    return connect(writable)


@pytest.fixture
def session(sandbox: Sandbox) -> CaSession:
    """A bare session trusting the shared sandbox's CA."""
    return CaSession(sandbox.info["ca_bundle"])


@pytest.fixture(scope="session")
def client_for() -> Any:
    """Factory: ``client_for(sandbox)`` -> a connected simple-salesforce client."""
    return connect


@pytest.fixture(scope="session")
def token_for() -> Any:
    """Factory: ``token_for(sandbox, session)`` -> an access token (OAuth password flow)."""
    return password_token


@pytest.fixture(scope="session")
def session_for() -> Any:
    """Factory: ``session_for(sandbox)`` -> a requests session trusting the sandbox CA."""
    return lambda box: CaSession(box.info["ca_bundle"])


@pytest.fixture(scope="session")
def page_size() -> int:
    """The page size of the shared sandbox."""
    return PAGE_SIZE
