"""Keeping web pages of other sites away from operator routes: a foreign ``Origin`` (cross-site requests, CSRF) and
a ``Host`` that names some other site (DNS rebinding: a site's name re-pointed at 127.0.0.1)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from urllib.parse import urlsplit


def _host_port(netloc: str) -> tuple[str, int | None] | None:
    """``host[:port]`` (``[v6]:port`` too) -> (lower-case host without brackets, port); None when malformed."""
    try:
        parts = urlsplit(f"//{netloc}")
        return (parts.hostname or "").lower(), parts.port
    except ValueError:
        return None


def is_local_host(host_header: str | None, listen_host: str | None = None) -> bool:
    """Whether a ``Host`` header names this server unambiguously: an IP address, ``localhost`` (or a name under
    ``.localhost``), or the name the server was told to listen on. A rebinding attack always sends its own name."""
    hp = _host_port(host_header or "")
    if hp is None or not hp[0]:
        return False
    name = hp[0]
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        pass
    return name == "localhost" or name.endswith(".localhost") or (
        listen_host is not None and name == listen_host.lower().strip("[]"))


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether an ``Origin`` header is the origin of the server the request reached (``Origin: null`` is not)."""
    try:
        parts = urlsplit(origin)
        theirs = (parts.hostname or "").lower(), parts.port
    except ValueError:
        return False
    ours = _host_port(host_header or "")
    return parts.scheme in ("http", "https") and ours is not None and bool(theirs[0]) and theirs == ours


def browser_refusal(headers: Mapping[str, str], listen_host: str | None = None, check_host: bool = True) -> str | None:
    """Why a request looks like it comes from another site's page (None when it does not). ``check_host``: also
    refuse a ``Host`` that is not a local name (needed where no credential is asked for)."""
    origin = headers.get("Origin")
    if origin is not None and not same_origin(origin, headers.get("Host")):
        return f"Cross-site request refused (Origin {origin[:100]!r} is not this server)."
    if check_host and not is_local_host(headers.get("Host"), listen_host):
        return ("Host not allowed: use an IP address or localhost (this server answers no other name without "
                "a key, so a web page cannot reach it by re-pointing its own name).")
    return None
