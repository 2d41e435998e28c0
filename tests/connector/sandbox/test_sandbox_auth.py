"""Login flows and TLS.

simple-salesforce hard-codes login URLs to https://{domain}.salesforce.com, so the client's
``SalesforceLogin`` cannot reach 127.0.0.1. These tests call the client's own lower-level
``soap_login`` and ``token_login`` with the exact bodies ``SalesforceLogin`` builds
(simple_salesforce/login.py, 1.12.10), then use the session in direct mode.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import socket
import ssl
import time
from html import escape
from pathlib import Path

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed
from simple_salesforce.login import soap_login, token_login


def soap_body(username: str, password: str, token: str) -> str:
    """The partner login envelope, as SalesforceLogin writes it for security-token logins."""
    return f"""<?xml version="1.0" encoding="utf-8" ?>
<env:Envelope
        xmlns:xsd="http://www.w3.org/2001/XMLSchema"
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
        xmlns:env="http://schemas.xmlsoap.org/soap/envelope/"
        xmlns:urn="urn:partner.soap.sforce.com">
    <env:Header>
        <urn:CallOptions>
            <urn:client>simple-salesforce</urn:client>
            <urn:defaultNamespace>sf</urn:defaultNamespace>
        </urn:CallOptions>
    </env:Header>
    <env:Body>
        <n1:login xmlns:n1="urn:partner.soap.sforce.com">
            <n1:username>{escape(username)}</n1:username>
            <n1:password>{escape(password)}{token}</n1:password>
        </n1:login>
    </env:Body>
</env:Envelope>"""


SOAP_HEADERS = {"content-type": "text/xml", "charset": "UTF-8", "SOAPAction": "login"}


def test_soap_login_with_the_clients_parser(sandbox, session):
    info = sandbox.info
    body = soap_body(info["username"], info["password"], info["security_token"])
    session_id, instance = soap_login(
        f"{sandbox.url}/services/Soap/u/59.0", body, SOAP_HEADERS, None, session
    )
    assert instance == sandbox.url.removeprefix("https://")
    client = Salesforce(instance=instance, session_id=session_id, session=session)
    assert client.query("SELECT COUNT() FROM Lead")["totalSize"] > 0


def test_soap_login_failure_is_a_prefixed_fault(sandbox, session):
    info = sandbox.info
    body = soap_body(info["username"], info["password"], "wrong-token")
    with pytest.raises(SalesforceAuthenticationFailed) as error:
        soap_login(f"{sandbox.url}/services/Soap/u/59.0", body, SOAP_HEADERS, None, session)
    assert error.value.code == "INVALID_LOGIN"
    assert error.value.auth_message == (
        "Invalid username, password, security token; or user locked out."
    )
    raw = session.post(f"{sandbox.url}/services/Soap/u/59.0", data=body, headers=SOAP_HEADERS)
    assert raw.status_code == 500 and b"<sf:exceptionCode>" in raw.content


def test_oauth_password_flow(sandbox, session):
    info = sandbox.info
    data = {
        "grant_type": "password",
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        "username": info["username"],
        "password": info["password"],
    }
    token, instance = token_login(
        f"{sandbox.url}/services/oauth2/token",
        data,
        "login",
        info["client_id"],
        None,
        None,
        session,
    )
    assert instance == sandbox.url.removeprefix("https://")
    raw = session.post(f"{sandbox.url}/services/oauth2/token", data=data).json()
    assert {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"} <= set(
        raw
    )
    assert raw["instance_url"] == sandbox.url and raw["token_type"] == "Bearer"
    assert (
        Salesforce(instance_url=raw["instance_url"], session_id=token, session=session).query(
            "SELECT COUNT() FROM Lead"
        )["totalSize"]
        > 0
    )


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"password": "wrong"}, "invalid_grant"),
        ({"username": "someone@else.example"}, "invalid_grant"),
        ({"client_id": "nope"}, "invalid_client_id"),
        ({"client_secret": "nope"}, "invalid_client"),
        ({"grant_type": "authorization_code"}, "unsupported_grant_type"),
    ],
)
def test_oauth_password_flow_failures(sandbox, session, change, error):
    info = sandbox.info
    data = {
        "grant_type": "password",
        "client_id": info["client_id"],
        "client_secret": info["client_secret"],
        "username": info["username"],
        "password": info["password"],
        **change,
    }
    response = session.post(f"{sandbox.url}/services/oauth2/token", data=data)
    assert response.status_code == 400
    assert response.json()["error"] == error
    with pytest.raises(SalesforceAuthenticationFailed):
        token_login(f"{sandbox.url}/services/oauth2/token", data, "login", "x", None, None, session)


def test_client_credentials_with_basic_auth_and_form_fields(sandbox, session):
    info = sandbox.info
    basic = base64.b64encode(f"{info['client_id']}:{info['client_secret']}".encode()).decode()
    token, _ = token_login(
        f"{sandbox.url}/services/oauth2/token",
        {"grant_type": "client_credentials"},
        "mydomain",
        info["client_id"],
        {"Authorization": f"Basic {basic}"},
        None,
        session,
    )
    assert token
    form = session.post(
        f"{sandbox.url}/services/oauth2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": info["client_id"],
            "client_secret": info["client_secret"],
        },
    )
    assert form.status_code == 200 and form.json()["scope"] == "api"
    bad = base64.b64encode(f"{info['client_id']}:wrong".encode()).decode()
    response = session.post(
        f"{sandbox.url}/services/oauth2/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {bad}"},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_client"


def jwt_assertion(info: dict, key: bytes | str, **overrides: object) -> str:
    """An assertion built the way SalesforceLogin builds it (exp as a string of seconds)."""
    expiration = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3)
    payload = {
        "iss": info["client_id"],
        "sub": info["username"],
        "aud": "https://login.salesforce.com",
        "exp": f"{expiration.timestamp():.0f}",
        **overrides,
    }
    return jwt.encode(payload, key, algorithm="RS256")


def test_jwt_bearer_flow(sandbox, session):
    info = sandbox.info
    key = Path(info["jwt_private_key"]).read_bytes()
    for audience in ("https://login.salesforce.com", "https://test.salesforce.com", sandbox.url):
        data = {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": jwt_assertion(info, key, aud=audience),
        }
        token, _ = token_login(
            f"{sandbox.url}/services/oauth2/token",
            data,
            "login",
            info["client_id"],
            None,
            None,
            session,
        )
        assert token


def other_key() -> bytes:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
    )


@pytest.mark.parametrize(
    ("overrides", "use_other_key", "error"),
    [
        ({}, True, "invalid_grant"),  # signed by a key the app does not know
        ({"exp": str(int(time.time()) - 10)}, False, "invalid_grant"),
        ({"aud": "https://evil.example"}, False, "invalid_grant"),
        ({"iss": "someone-else"}, False, "invalid_client_id"),
        ({"sub": "nobody@example.com"}, False, "invalid_grant"),
    ],
)
def test_jwt_bearer_failures(sandbox, session, overrides, use_other_key, error):
    info = sandbox.info
    key = other_key() if use_other_key else Path(info["jwt_private_key"]).read_bytes()
    response = session.post(
        f"{sandbox.url}/services/oauth2/token",
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": jwt_assertion(info, key, **overrides),
        },
    )
    assert response.status_code == 400
    assert response.json()["error"] == error


def test_garbage_assertion(sandbox, session):
    response = session.post(
        f"{sandbox.url}/services/oauth2/token",
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "a.b.c"},
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


# --------------------------------------------------------------------------------------------
# TLS


def test_certificate_is_signed_by_the_ca_with_ip_and_dns_names(sandbox):
    info = sandbox.info
    leaf_pem = ssl.get_server_certificate(("127.0.0.1", int(sandbox.url.rsplit(":", 1)[1])))
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    # The login hosts let clients with a hard-coded login URL reach the sandbox by name.
    assert names.get_values_for_type(x509.DNSName) == [
        "localhost",
        "login.salesforce.com",
        "test.salesforce.com",
    ]
    ca = x509.load_pem_x509_certificate(Path(info["ca_bundle"]).read_bytes())
    leaf.verify_directly_issued_by(ca)


def test_clients_without_the_ca_are_rejected_and_localhost_works(sandbox):
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{sandbox.url}/services/data/", verify=True, timeout=5)
    port = sandbox.url.rsplit(":", 1)[1]
    response = requests.get(
        f"https://localhost:{port}/services/data/", verify=sandbox.info["ca_bundle"], timeout=5
    )
    assert response.status_code == 200


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_tls_below_1_2_is_refused(sandbox):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(sandbox.info["ca_bundle"])
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    port = int(sandbox.url.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        pytest.raises((ssl.SSLError, OSError)),
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")


def test_info_is_json_safe_and_complete(sandbox):
    info = json.loads(json.dumps(sandbox.info))
    assert set(info) == {
        "salesforce_url",
        "login_url",
        "client_id",
        "client_secret",
        "username",
        "password",
        "security_token",
        "refresh_token",
        "jwt_private_key",
        "ca_bundle",
        "api_version",
        "seed",
        "leads",
        "org",
        "as_of",
        "segment_url",
        "segment_write_key",
        "profile_api_url",
        "profile_api_token",
        "space_id",
        "segment_data",
        "pubsub_endpoint",
        "org_id",
        "sales_users",
    }
    assert info["api_version"] == "59.0" and info["login_url"] == info["salesforce_url"]
    assert info["as_of"] == "2025-06-01T12:00:00+00:00"
    assert Path(info["ca_bundle"]).name == "ca.pem"
