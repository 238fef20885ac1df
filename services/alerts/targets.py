"""Where a webhook may POST: http(s) URLs whose every resolved address is public, checked when a
webhook is stored and again before each attempt (a name that later resolves to a loopback,
private or link-local address, DNS rebinding, is refused, not sent to)."""

from __future__ import annotations

import ipaddress
import socket

import httpx

from services.errors import InvalidInput

NON_PUBLIC = ("unspecified", "loopback", "link_local", "multicast", "private", "reserved")  # ipaddress is_* flags


def check_url(url: str, *, allow_private: bool) -> list[str]:
    """Raise InvalidInput unless url is http(s) on a host whose every address is public;
    returns the resolved addresses."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise InvalidInput(f"webhook URL {url!r} is not a valid URL: {exc}") from exc
    host, scheme = parsed.raw_host.decode("ascii"), parsed.scheme
    if scheme not in ("http", "https") or not host:
        raise InvalidInput(f"webhook URL {url!r} must be http:// or https:// with a host")
    try:
        infos = socket.getaddrinfo(host, parsed.port or (443 if scheme == "https" else 80), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise InvalidInput(f"webhook URL host {host!r} does not resolve: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not allow_private:
        for address in addresses:
            kind = _non_public(address)
            if kind:
                # A name's address stays unsaid: the answer must not map internal names for a caller.
                said = address if _is_literal(host) else "an address"
                raise InvalidInput(
                    f"webhook URL host {host!r} resolves to {said} ({kind} address); refused "
                    "(SIFT_WEBHOOK_ALLOW_PRIVATE=true allows it)",
                    details={"host": host, "problem": kind},
                )
    return addresses


def _is_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


def _non_public(address: str) -> str | None:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    for candidate in (*_embedded_ipv4(ip), ip):
        kind = next((k for k in NON_PUBLIC if getattr(candidate, f"is_{k}")), None)
        if kind is None and not candidate.is_global:
            kind = "non_public"
        if kind is not None:
            return kind.replace("_", "-")
    return None


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    # IPv6 forms whose packets end at an IPv4 address (mapped, 6to4, Teredo): that one is checked too.
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    return [a for a in (ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())) if a is not None]
