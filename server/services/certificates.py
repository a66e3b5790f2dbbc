"""Certificate expiry: the files the reverse proxy serves and the LAN listener's certificates.

Which files: ``MODELTRAIN_TLS_CERT_FILES`` when set, else every ``ssl_certificate`` of the nginx site
files rendered from the shipped templates (``packaging/nginx/modeltrain*.conf.template``, installed as
``/etc/nginx/conf.d/modeltrain*.conf`` or ``/etc/nginx/sites-enabled/modeltrain*``), plus this install's
LAN certificate authority and server certificate (``<data dir>/tls``) where LAN HTTPS exists.

Within ``WARNING_DAYS`` (14) of expiry a certificate is a warning, within ``ALERT_DAYS`` (3) — or expired,
or unreadable — an alert. ``doctor`` reports it; the alert notifier checks daily and raises ``cert:<file>``
alerts through the same channels as every other alert.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509

from server.security.local_ca import TLS_DIR
from server.services.alerts import AlertCenter
from server.settings import Settings

WARNING_DAYS = 14
ALERT_DAYS = 3
NGINX_SITE_GLOBS = ("/etc/nginx/conf.d/modeltrain*.conf", "/etc/nginx/sites-enabled/modeltrain*")
LAN_CERT_FILES = ("ca.crt", "server.crt")
ALERT_PREFIX = "cert:"
_SSL_CERTIFICATE = re.compile(r"^\s*ssl_certificate\s+([^;\s]+)\s*;", re.MULTILINE)


@dataclass(frozen=True)
class CertStatus:
    path: str
    #: normal | warning | alert
    level: str
    not_after: datetime | None
    days_left: float | None
    detail: str


def nginx_certificate_files(site_globs: Iterable[str] = NGINX_SITE_GLOBS) -> list[Path]:
    """``ssl_certificate`` paths of the rendered nginx site files (an unrendered ``${...}`` is skipped)."""
    found: list[Path] = []
    for pattern in site_globs:
        for name in sorted(glob.glob(pattern)):
            try:
                text = Path(name).read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            for value in _SSL_CERTIFICATE.findall(text):
                value = value.strip("'\"")
                if "$" not in value and Path(value) not in found:
                    found.append(Path(value))
    return found


def certificate_files(settings: Settings, site_globs: Iterable[str] = NGINX_SITE_GLOBS) -> list[Path]:
    files = [Path(f) for f in settings.tls_cert_files] or nginx_certificate_files(site_globs)
    lan = settings.data_dir / TLS_DIR
    files += [lan / name for name in LAN_CERT_FILES if (lan / name).is_file()]
    return files


def check_file(path: Path, now: datetime | None = None) -> CertStatus:
    now = now or datetime.now(timezone.utc)
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return CertStatus(str(path), "alert", None, None, f"{path}: unreadable ({type(exc).__name__})")
    not_after = cert.not_valid_after_utc
    left = (not_after - now) / timedelta(days=1)
    if left <= 0:
        level, detail = "alert", f"{path}: expired on {not_after:%Y-%m-%d}"
    else:
        level = "alert" if left <= ALERT_DAYS else "warning" if left <= WARNING_DAYS else "normal"
        detail = f"{path}: expires on {not_after:%Y-%m-%d} (in {left:.0f} days)"
    return CertStatus(str(path), level, not_after, round(left, 1), detail)


def check_all(
    settings: Settings, now: datetime | None = None, site_globs: Iterable[str] = NGINX_SITE_GLOBS
) -> list[CertStatus]:
    return [check_file(path, now) for path in certificate_files(settings, site_globs)]


def update_alerts(alerts: AlertCenter, statuses: list[CertStatus], now: datetime | None = None) -> None:
    """Raise ``cert:<path>`` for each certificate near expiry; resolve those that are fine again or gone."""
    now = now or datetime.now(timezone.utc)
    seen = set()
    for status in statuses:
        key = ALERT_PREFIX + status.path
        seen.add(key)
        if status.level == "normal":
            alerts.resolve(key, now)
        else:
            alerts.raise_alert(
                key,
                level=status.level,
                metric="certificate",
                value=status.days_left,
                message=f"TLS certificate {status.detail}",
                now=now,
            )
    for alert in alerts.active():
        if alert.key.startswith(ALERT_PREFIX) and alert.key not in seen:
            alerts.resolve(alert.key, now)
