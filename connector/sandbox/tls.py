"""TLS material for the sandbox: a private CA, a server certificate for 127.0.0.1, the JWT key pair.

Clients trust ``tls/ca.pem`` (the CA), never the leaf directly, as they would trust a corporate CA.
The leaf carries ``IP:127.0.0.1`` and ``DNS:localhost`` subject alternative names, which is what
hostname verification checks, plus the production and sandbox login hosts: clients that hard-code
``https://login.salesforce.com`` (tap-salesforce, Airbyte) reach the sandbox when only name
resolution is redirected, with TLS verification on (``shared/docs/api-contracts-realorg.md``
section 8). EC P-256 keys keep generation in the milliseconds. The connected
app's JWT key is RSA because the JWT bearer flow signs with RS256
(https://help.salesforce.com/s/articleView?id=sf.remoteaccess_oauth_jwt_flow.htm).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOGIN_HOST_NAMES = ("login.salesforce.com", "test.salesforce.com")
_VALIDITY = dt.timedelta(days=365)
_RENEW_BEFORE = dt.timedelta(days=7)


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the sandbox's TLS and JWT material.

    Attributes:
        ca_cert: PEM CA certificate: the bundle clients trust.
        server_cert: PEM leaf certificate followed by the CA (the chain the server presents).
        server_key: PEM private key of the leaf.
        jwt_private_key: PEM RSA private key the connected app's JWT assertions are signed with.
        jwt_cert: PEM certificate registered with the connected app (verifies JWT signatures).
    """

    ca_cert: Path
    server_cert: Path
    server_key: Path
    jwt_private_key: Path
    jwt_cert: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "leadscore sandbox"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _pem_key(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by the owner only."""
    path.write_bytes(data)
    path.chmod(0o600)


def _leaf_is_fresh(path: Path) -> bool:
    """Whether an existing leaf certificate is valid for at least another week."""
    if not path.exists():
        return False
    try:
        cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    except (ValueError, IndexError):
        return False
    now = dt.datetime.now(dt.UTC)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    # A leaf from before the login hosts were added is renewed.
    has_login_hosts = set(LOGIN_HOST_NAMES) <= set(names.get_values_for_type(x509.DNSName))
    return has_login_hosts and cert.not_valid_after_utc - now > _RENEW_BEFORE


def _make_jwt_material(key_path: Path, cert_path: Path) -> None:
    """Create the connected app's RSA key and its self-signed certificate."""
    now = dt.datetime.now(dt.UTC)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = _name("leadscore sandbox connected app")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    _write_private(key_path, _pem_key(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _make_server_material(tls_dir: Path) -> None:
    """Create a fresh CA and a leaf certificate for 127.0.0.1/localhost signed by it."""
    now = dt.datetime.now(dt.UTC)
    start = now - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("leadscore sandbox CA")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(now + _VALIDITY - dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    *(x509.DNSName(name) for name in LOGIN_HOST_NAMES),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    (tls_dir / "ca.pem").write_bytes(ca_pem)
    _write_private(tls_dir / "ca.key", _pem_key(ca_key))
    (tls_dir / "server.pem").write_bytes(
        leaf_cert.public_bytes(serialization.Encoding.PEM) + ca_pem
    )
    _write_private(tls_dir / "server.key", _pem_key(leaf_key))


def ensure_tls_files(workdir: Path) -> TlsFiles:
    """Create (or reuse, while still valid) the TLS and JWT material under ``workdir``.

    Args:
        workdir: The sandbox's working directory.

    Returns:
        The paths of the material.
    """
    tls_dir = workdir / "tls"
    tls_dir.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(
        ca_cert=tls_dir / "ca.pem",
        server_cert=tls_dir / "server.pem",
        server_key=tls_dir / "server.key",
        jwt_private_key=workdir / "jwt_private_key.pem",
        jwt_cert=workdir / "jwt_cert.pem",
    )
    if not (_leaf_is_fresh(files.server_cert) and files.server_key.exists()):
        _make_server_material(tls_dir)
    if not (files.jwt_private_key.exists() and files.jwt_cert.exists()):
        _make_jwt_material(files.jwt_private_key, files.jwt_cert)
    return files


def make_server_context(files: TlsFiles) -> ssl.SSLContext:
    """Build the server-side TLS context (TLS 1.2 or newer).

    Args:
        files: The material from :func:`ensure_tls_files`.

    Returns:
        An SSL context that presents the leaf certificate and its chain.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(files.server_cert, files.server_key)
    return context
