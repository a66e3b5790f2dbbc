"""This install's own certificate authority, for LAN access over HTTPS.

On first LAN use :func:`ensure_server_certificate` creates, under ``<data dir>/tls`` (0700):

- ``ca.key`` (0600) and ``ca.crt``: an EC P-256 CA "ModelTrain local CA (<host>)", ten years, path
  length 0, usable only to sign certificates. Users install ``ca.crt`` on their phones and PCs, after
  comparing its SHA-256 fingerprint with the one the desktop shows.
- ``server.key`` (0600) and ``server.crt``: a serverAuth certificate signed by that CA for every address
  and name the LAN listener answers on, valid for :data:`SERVER_DAYS` (under browsers' 398-day limit).

The server certificate is reissued when it is missing, unreadable, not signed by the current CA, expires
within :data:`RENEW_DAYS`, or does not cover the names asked for (a new Wi-Fi address). A CA key that
cannot be read is never replaced silently (every device trusting the old CA would break, and a swapped
CA is what an attacker would want): it raises :class:`LocalCaError`, and the LAN listener stays off
(docs/security.md, A5). ``now`` is injectable; nothing here sleeps or touches the network.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from server.security.secret_store import ensure_private_dir, write_private_file

TLS_DIR = "tls"
CA_DAYS = 3650
SERVER_DAYS = 397
RENEW_DAYS = 30


class LocalCaError(Exception):
    """The local CA cannot be used (unreadable or corrupt key); LAN access must stay off."""


@dataclass(frozen=True)
class ServerCertificate:
    """The files the TLS listener loads, and what the LAN dialog shows."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    ca_pem: bytes
    ca_der: bytes
    ca_fingerprint_sha256: str
    not_after: dt.datetime
    names: tuple[str, ...]
    #: True when this call wrote a new server certificate.
    issued: bool


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER certificate as colon-separated upper-case hex (as phones and browsers show it)."""
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _now(now: dt.datetime | None) -> dt.datetime:
    return (now or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    if os.name == "posix":
        tmp.chmod(0o644)
    os.replace(tmp, path)


def _create_ca(directory: Path, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    host = socket.gethostname().strip() or "this computer"
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"ModelTrain local CA ({host})"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ModelTrain"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_file(directory / "ca.key", _key_pem(key))
    _write_public(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def _load_ca(directory: Path, now: dt.datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key_file, cert_file = directory / "ca.key", directory / "ca.crt"
    if not key_file.exists() and not cert_file.exists():
        return _create_ca(directory, now)
    try:
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise LocalCaError(
            f"the local certificate authority in {directory} is unreadable ({type(exc).__name__}); "
            "LAN access stays off. Remove that folder to create a new one (devices must then trust the new "
            "CA certificate)"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != cert.public_key():
        raise LocalCaError(
            f"the local certificate authority's key in {directory} does not match its certificate; "
            "LAN access stays off. Remove that folder to create a new one"
        )
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_DAYS):
        raise LocalCaError(
            f"the local certificate authority in {directory} expires on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "remove that folder to create a new one (devices must then trust the new CA certificate)"
        )
    return key, cert


def _san(names: list[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in names:
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def _cert_names(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} | {
        n.lower() for n in san.get_values_for_type(x509.DNSName)
    }


def _wanted_names(names: list[str]) -> list[str]:
    result: list[str] = []
    for name in names:
        try:
            value = str(ipaddress.ip_address(name.strip("[]")))
        except ValueError:
            value = name.strip().lower().rstrip(".")
        if value and value not in result:
            result.append(value)
    return result


def _current_server_cert(
    directory: Path, ca: x509.Certificate, names: list[str], now: dt.datetime
) -> x509.Certificate | None:
    """The saved server certificate if it is still good for ``names``; None when it must be reissued."""
    try:
        cert = x509.load_pem_x509_certificate((directory / "server.crt").read_bytes())
        key = serialization.load_pem_private_key((directory / "server.key").read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if key.public_key() != cert.public_key() or cert.issuer != ca.subject:
        return None
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return None
    if cert.not_valid_after_utc - now < dt.timedelta(days=RENEW_DAYS):
        return None
    if _cert_names(cert) != set(names):
        return None
    return cert


def _issue_server_cert(
    directory: Path,
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    names: list[str],
    now: dt.datetime,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(min(now + dt.timedelta(days=SERVER_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(_san(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    write_private_file(directory / "server.key", _key_pem(key))
    _write_public(directory / "server.crt", cert.public_bytes(serialization.Encoding.PEM))
    return cert


def ensure_server_certificate(
    data_dir: Path, names: list[str], *, now: dt.datetime | None = None
) -> ServerCertificate:
    """The CA (created on first use) and a server certificate covering ``names`` (IP addresses and host
    names), reissued when needed. Raises :class:`LocalCaError` when the CA cannot be used."""
    wanted = _wanted_names(names)
    if not wanted:
        raise LocalCaError("no address or name to issue the LAN certificate for")
    moment = _now(now)
    directory = data_dir / TLS_DIR
    ensure_private_dir(data_dir)
    ensure_private_dir(directory)
    ca_key, ca = _load_ca(directory, moment)
    cert = _current_server_cert(directory, ca, wanted, moment)
    issued = cert is None
    if cert is None:
        cert = _issue_server_cert(directory, ca_key, ca, wanted, moment)
    return ServerCertificate(
        cert_file=directory / "server.crt",
        key_file=directory / "server.key",
        ca_file=directory / "ca.crt",
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        ca_der=ca.public_bytes(serialization.Encoding.DER),
        ca_fingerprint_sha256=fingerprint(ca),
        not_after=cert.not_valid_after_utc,
        names=tuple(wanted),
        issued=issued,
    )


def ca_certificate_der(data_dir: Path) -> bytes | None:
    """The CA certificate (DER) for download, or None when there is none (yet) or it is unreadable."""
    try:
        return x509.load_pem_x509_certificate((data_dir / TLS_DIR / "ca.crt").read_bytes()).public_bytes(
            serialization.Encoding.DER
        )
    except (OSError, ValueError):
        return None
