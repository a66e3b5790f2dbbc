from __future__ import annotations

import datetime as dt
import ipaddress

from pydantic import BaseModel, Field, field_validator

from server.schemas.common import StrictModel


class LanRead(BaseModel):
    """The LAN listener: off by default; when on, the URL others on the network use."""

    enabled: bool
    url: str | None = None
    host: str | None = None
    port: int | None = None
    #: Every URL the listener answers on (one per interface address when bound to all interfaces).
    urls: list[str] = Field(default_factory=list)
    #: Interface addresses and names added to the Host allow-list while LAN access is on.
    addresses: list[str] = Field(default_factory=list)
    #: Why the last attempt to open the listener failed (e.g. at start-up), if it did.
    error: str | None = None
    #: SHA-256 fingerprint of this install's CA certificate (colon-separated hex), to compare on devices.
    ca_fingerprint_sha256: str | None = None
    #: Where devices on the LAN download the CA certificate (plain HTTP, so it works before they trust it).
    ca_download_url: str | None = None
    #: The same download as a path on whichever listener serves the page (e.g. loopback).
    ca_download_path: str | None = None
    #: When the LAN listener's server certificate expires (it is renewed 30 days before).
    certificate_expires_at: dt.datetime | None = None


class LanUpdate(StrictModel):
    enabled: bool
    host: str | None = Field(
        default=None, max_length=64, description="IP address to listen on (0.0.0.0: all)."
    )
    port: int | None = Field(default=None, ge=0, le=65535, description="Port (0: any free port).")
    #: The administrator's password again; required to turn LAN access on.
    password: str | None = Field(default=None, max_length=1024)

    @field_validator("host")
    @classmethod
    def _ip_literal(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip().strip("[]")
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("must be an IP address such as 0.0.0.0 or 192.168.1.20") from None
