"""Which webhook URLs comfyq may call: http(s) to public addresses, unless told otherwise.

A webhook URL comes from whoever submits a run, so without this check a caller could make
comfyq's workers POST into the private network they sit in (SSRF): a cloud metadata service,
Redis, an admin page. The host is resolved and every address it resolves to must be allowed;
the check runs at submit and before every attempt, and the transport checks the address it
actually connected to as well, because DNS answers can change between the two.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from comfyq.errors import ComfyqError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Host names of cloud metadata services; refused before any DNS lookup.
METADATA_HOSTNAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
#: Addresses of cloud metadata and platform services (AWS, ECS, GCP, Azure, Alibaba).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(text) for text in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "fd00:ec2::23",
    "168.63.129.16", "100.100.100.200",
))
ALLOWED_SCHEMES = ("http", "https")


class UnsafeWebhookURL(ComfyqError, ValueError):
    """A webhook URL that comfyq refuses to call; the message names the reason."""


class UnresolvableWebhookHost(UnsafeWebhookURL):
    """The URL's host name does not resolve (now): refused at submit, retried at delivery."""


@dataclass(frozen=True)
class AddressPolicy:
    """Which kinds of non-public address are allowed as webhook targets."""

    allow_loopback: bool = False
    allow_private: bool = False

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be called, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        if address in METADATA_ADDRESSES:
            return f"{address} is a cloud metadata address"
        if address.is_unspecified:
            return f"{address} is the unspecified address"
        if address.is_multicast:
            return f"{address} is a multicast address"
        if address.is_loopback:
            return None if self.allow_loopback else (
                f"{address} is a loopback address "
                "(set COMFYQ_WEBHOOK_ALLOW_LOOPBACK=true to allow it)")
        if address.is_reserved:
            return f"{address} is a reserved address"
        if address.is_link_local or address.is_private or not address.is_global:
            kind = "link-local" if address.is_link_local else (
                "private" if address.is_private else "non-public")
            return None if self.allow_private else (
                f"{address} is a {kind} address "
                "(set COMFYQ_WEBHOOK_ALLOW_PRIVATE=true to allow it)")
        return None

    def check_address(self, address: str, target: str) -> None:
        """Raise :class:`UnsafeWebhookURL` naming `target` unless `address` may be called."""
        reason = self.refusal(ipaddress.ip_address(address.split("%", 1)[0]))
        if reason:
            raise UnsafeWebhookURL(f"{target} refused: {reason}")


def display_url(url: str) -> str:
    """`url` without credentials or query, which may hold tokens, for messages and logs."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed URL>"
    host = f"[{host}]" if ":" in host else host
    query = "?..." if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


def _split_target(url: str) -> tuple[str, int]:
    """The host and port of an http(s) URL; UnsafeWebhookURL when it is not one."""
    if not isinstance(url, str) or not url or any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise UnsafeWebhookURL("webhook URL must be a non-empty URL without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise UnsafeWebhookURL(f"webhook URL {display_url(url)} is malformed: {error}") from None
    scheme = parts.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeWebhookURL(
            f"webhook URL {display_url(url)} refused: scheme {scheme or '(none)'!r} "
            "is not http or https")
    if not parts.hostname:
        raise UnsafeWebhookURL(f"webhook URL {display_url(url)} refused: it names no host")
    return parts.hostname.rstrip("."), port or (443 if scheme == "https" else 80)


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnresolvableWebhookHost(f"webhook host {host!r} does not resolve: {error}") from None
    return sorted({info[4][0] for info in infos})


def check_webhook_url(url: str, *, allow_loopback: bool, allow_private: bool) -> list[str]:
    """Refuse a webhook URL comfyq must not call; returns the addresses its host resolves to.

    :raises UnresolvableWebhookHost: the host does not resolve.
    :raises UnsafeWebhookURL: not http(s), no host, a cloud metadata host, or any address that
        is loopback, private, link-local, multicast, unspecified or reserved and not allowed.
    """
    host, port = _split_target(url)
    if host.lower() in METADATA_HOSTNAMES:
        raise UnsafeWebhookURL(
            f"webhook URL {display_url(url)} refused: {host} is a cloud metadata host")
    policy = AddressPolicy(allow_loopback=allow_loopback, allow_private=allow_private)
    addresses = resolve(host, port)
    for address in addresses:
        policy.check_address(address, f"webhook URL {display_url(url)}")
    return addresses
