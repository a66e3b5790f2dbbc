"""This install's CA for LAN HTTPS: the chain verifies, the names are right, keys are private, and the
server certificate is reissued when it nears expiry or the machine's addresses change (``now`` injected)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store

from server.security import local_ca

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.timezone.utc)
NAMES = ["192.168.1.20", "2001:db8::20", "mybox", "mybox.local"]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_a_new_ca_and_server_certificate_chain_verifies(tmp_path: Path) -> None:
    made = local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    assert made.issued
    ca, server = _cert(made.ca_file), _cert(made.cert_file)
    cn = ca.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    assert str(cn).startswith("ModelTrain local CA (")
    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert basic.ca is True and basic.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature
    assert ca.not_valid_after_utc - NOW > dt.timedelta(days=3600)
    assert server.not_valid_after_utc - NOW <= dt.timedelta(days=397)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]

    store = Store([ca])
    for name in ("192.168.1.20", "2001:db8::20"):
        verifier = (
            PolicyBuilder()
            .store(store)
            .time(NOW)
            .build_server_verifier(x509.IPAddress(ipaddress.ip_address(name)))
        )
        assert verifier.verify(server, [])[-1] == ca
    for name in ("mybox", "mybox.local"):
        verifier = PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName(name))
        assert verifier.verify(server, [])[-1] == ca
    other = PolicyBuilder().store(store).time(NOW).build_server_verifier(x509.DNSName("evil.example"))
    with pytest.raises(x509.verification.VerificationError):
        other.verify(server, [])
    checked = subprocess.run(
        ["openssl", "verify", "-CAfile", str(made.ca_file), str(made.cert_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


def test_keys_are_private_and_the_fingerprint_matches(tmp_path: Path) -> None:
    made = local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    directory = tmp_path / local_ca.TLS_DIR
    if os.name == "posix":
        assert directory.stat().st_mode & 0o777 == 0o700
        assert (directory / "ca.key").stat().st_mode & 0o777 == 0o600
        assert (directory / "server.key").stat().st_mode & 0o777 == 0o600
    parts = made.ca_fingerprint_sha256.split(":")
    assert len(parts) == 32 and all(len(p) == 2 for p in parts)
    assert made.ca_fingerprint_sha256 == local_ca.fingerprint(_cert(made.ca_file))
    assert local_ca.ca_certificate_der(tmp_path) == made.ca_der
    assert x509.load_der_x509_certificate(made.ca_der) == _cert(made.ca_file)


def test_the_certificate_is_kept_while_good_and_renewed_before_it_expires(tmp_path: Path) -> None:
    first = local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    later = NOW + dt.timedelta(days=300)
    kept = local_ca.ensure_server_certificate(tmp_path, list(reversed(NAMES)), now=later)
    assert not kept.issued and kept.not_after == first.not_after
    near_expiry = first.not_after - dt.timedelta(days=local_ca.RENEW_DAYS - 1)
    renewed = local_ca.ensure_server_certificate(tmp_path, NAMES, now=near_expiry)
    assert renewed.issued and renewed.not_after > first.not_after
    assert renewed.ca_fingerprint_sha256 == first.ca_fingerprint_sha256  # the CA stays: devices keep trusting


def test_a_new_address_gets_a_new_certificate(tmp_path: Path) -> None:
    local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    moved = local_ca.ensure_server_certificate(tmp_path, ["10.0.0.7", "mybox", "mybox.local"], now=NOW)
    assert moved.issued
    san = _cert(moved.cert_file).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]


@pytest.mark.parametrize("broken", ["server.crt", "server.key"])
def test_a_corrupt_server_certificate_is_reissued(tmp_path: Path, broken: str) -> None:
    first = local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    (tmp_path / local_ca.TLS_DIR / broken).write_text("garbage")
    again = local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    assert again.issued and again.ca_fingerprint_sha256 == first.ca_fingerprint_sha256


def test_a_server_certificate_from_another_ca_is_reissued(tmp_path: Path) -> None:
    local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    other = tmp_path / "other"
    local_ca.ensure_server_certificate(other, NAMES, now=NOW)
    for name in ("server.crt", "server.key"):
        (tmp_path / local_ca.TLS_DIR / name).write_bytes((other / local_ca.TLS_DIR / name).read_bytes())
    assert local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW).issued


@pytest.mark.parametrize("content", ["garbage", ""])
def test_a_corrupt_ca_key_is_an_error_never_silently_replaced(tmp_path: Path, content: str) -> None:
    first = local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    (tmp_path / local_ca.TLS_DIR / "ca.key").write_text(content)
    with pytest.raises(local_ca.LocalCaError, match="unreadable"):
        local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    assert local_ca.fingerprint(_cert(first.ca_file)) == first.ca_fingerprint_sha256


def test_a_ca_key_that_does_not_match_its_certificate_is_an_error(tmp_path: Path) -> None:
    local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)
    other = tmp_path / "other"
    local_ca.ensure_server_certificate(other, NAMES, now=NOW)
    (tmp_path / local_ca.TLS_DIR / "ca.key").write_bytes((other / local_ca.TLS_DIR / "ca.key").read_bytes())
    with pytest.raises(local_ca.LocalCaError, match="does not match"):
        local_ca.ensure_server_certificate(tmp_path, NAMES, now=NOW)


def test_no_names_no_certificate(tmp_path: Path) -> None:
    with pytest.raises(local_ca.LocalCaError):
        local_ca.ensure_server_certificate(tmp_path, [], now=NOW)
    assert local_ca.ca_certificate_der(tmp_path) is None
