"""Certificate expiry (services/certificates.py): files named by the rendered nginx configuration or
MODELTRAIN_TLS_CERT_FILES, and the LAN certificate; an expiring test certificate is reported by
``doctor`` and alerted (14 days: warning, 3 days: alert), and the alert resolves once it is renewed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from server.db.models import AlertEvent
from server.db.session import session_scope
from server.log_setup import ErrorCounter
from server.security.local_ca import ensure_server_certificate
from server.services import certificates, doctor
from server.services.alert_history import AlertNotifier
from server.services.alerts import AlertCenter
from server.settings import Settings
from tests.server.alert_support import migrated_runtime, webhook_receiver

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)


def write_cert(path: Path, expires_in: timedelta, now: datetime = NOW) -> Path:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modeltrain.example.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=80))
        .not_valid_after(now + expires_in)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.parametrize(
    ("left", "level"),
    [
        (timedelta(days=60), "normal"),
        (timedelta(days=10), "warning"),
        (timedelta(days=2), "alert"),
        (-timedelta(days=1), "alert"),
    ],
)
def test_expiry_levels(tmp_path: Path, left: timedelta, level: str) -> None:
    status = certificates.check_file(write_cert(tmp_path / "c.pem", left), NOW)
    assert status.level == level
    assert status.not_after is not None


def test_an_unreadable_certificate_is_an_alert(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate")
    assert certificates.check_file(tmp_path / "junk.pem", NOW).level == "alert"
    assert certificates.check_file(tmp_path / "missing.pem", NOW).level == "alert"


def test_the_files_come_from_the_rendered_nginx_sites(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    site = tmp_path / "modeltrain-https.conf"
    site.write_text(
        "server {\n    ssl_certificate     /etc/letsencrypt/live/mt/fullchain.pem;\n"
        "    ssl_certificate_key /etc/letsencrypt/live/mt/privkey.pem;\n}\n"
        "server {\n    ssl_certificate ${MODELTRAIN_TLS_CERT};\n}\n"
    )
    globs = [str(tmp_path / "modeltrain*.conf")]
    assert certificates.nginx_certificate_files(globs) == [Path("/etc/letsencrypt/live/mt/fullchain.pem")]
    settings = make_settings()
    assert certificates.certificate_files(settings, globs) == [Path("/etc/letsencrypt/live/mt/fullchain.pem")]
    # the setting wins over nginx; the LAN certificates join once LAN HTTPS exists
    ensure_server_certificate(settings.data_dir, ["127.0.0.1"])
    chosen = certificates.certificate_files(make_settings(tls_cert_files="/a.pem,/b.pem"), globs)
    assert chosen == [
        Path("/a.pem"),
        Path("/b.pem"),
        settings.data_dir / "tls" / "ca.crt",
        settings.data_dir / "tls" / "server.crt",
    ]


def test_the_shipped_template_names_its_certificate_through_a_variable() -> None:
    template = Path(__file__).resolve().parents[3] / "packaging" / "nginx" / "modeltrain-https.conf.template"
    assert "ssl_certificate     ${MODELTRAIN_TLS_CERT};" in template.read_text()
    assert certificates.nginx_certificate_files([str(template)]) == []  # unrendered: nothing to read


def test_doctor_reports_an_expiring_certificate(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    soon = write_cert(tmp_path / "soon.pem", timedelta(days=2), datetime.now(timezone.utc))
    later = write_cert(tmp_path / "later.pem", timedelta(days=200), datetime.now(timezone.utc))
    check = doctor.check_certificates(make_settings(tls_cert_files=[str(soon), str(later)]))
    assert not check.ok
    assert check.detail.startswith(f"alert: {soon}: expires on")
    assert str(later) not in check.detail
    assert "certbot renew" in check.fix
    assert doctor.check_certificates(make_settings(tls_cert_files=[str(later)])).ok
    assert ("certs", doctor.check_certificates) in doctor.CHECKS


def test_an_expiring_certificate_is_alerted_through_the_channels(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    cert = write_cert(tmp_path / "site.pem", timedelta(days=10))
    settings = make_settings(secret_store="file", tls_cert_files=[str(cert)])
    runtime = migrated_runtime(settings)
    runtime.clock = lambda: NOW.timestamp()
    notifier = AlertNotifier(runtime, AlertCenter(), ErrorCounter(), instance="host:1")
    from tests.server.services.test_alert_history import _webhook_channel

    with webhook_receiver() as hook:
        _webhook_channel(runtime, hook.url)
        asyncio.run(notifier.tick())  # the first tick runs the daily check
        (alert,) = notifier.alerts.active()
        assert (alert.key, alert.level, alert.metric, alert.value) == (
            f"cert:{cert}",
            "warning",
            "certificate",
            10.0,
        )
        write_cert(cert, timedelta(days=90))  # renewed
        notifier.daily()
        asyncio.run(notifier.tick())
    assert notifier.alerts.active() == []
    with session_scope(runtime.session_factory) as session:
        states = [e.state for e in session.scalars(select(AlertEvent).order_by(AlertEvent.at))]
    assert states == ["raised", "resolved"]
    assert [r.json()["alert"]["state"] for r in hook.requests] == ["raised", "resolved"]
    assert "TLS certificate" in hook.requests[0].json()["alert"]["message"]
