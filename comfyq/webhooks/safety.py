"""Which webhook URLs comfyq may call: http(s) to public addresses, unless told otherwise.

A webhook URL comes from whoever submits a run, so without this check a caller could make
comfyq's workers POST into the private network they sit in (SSRF): a cloud metadata service,
Redis, an admin page. The host is resolved and every address it resolves to must be allowed;
the check runs at submit and before every attempt, and the transport resolves and checks again
before each connection and connects only to the addresses it checked (DNS answers can change).

URLs are read by urllib3's ``parse_url``, the parser of the client that delivers, and a URL two
parsers could read differently is refused: one with a backslash, credentials (``user@``), a
percent-encoded host, whitespace or any character outside printable ASCII.

An IPv6 address that carries an IPv4 address (IPv4-mapped, IPv4-compatible, 6to4, Teredo,
NAT64's ``64:ff9b::/96``, ISATAP) is refused when the address it carries would be; NAT64's is
otherwise judged as the IPv4 address it reaches.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from comfyq.errors import ComfyqError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Host names of cloud metadata services; refused before any DNS lookup.
METADATA_HOSTNAMES = frozenset({"metadata.google.internal", "metadata.goog", "metadata"})
#: Addresses of cloud metadata and platform services (AWS, ECS, GCP, Azure, Alibaba).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(text) for text in (
    "169.254.169.254", "169.254.170.2", "169.254.169.253", "fd00:ec2::254", "fd00:ec2::23",
    "168.63.129.16", "100.100.100.200",
))
ALLOWED_SCHEMES = ("http", "https")
#: IPv6 prefixes whose addresses carry an IPv4 address in their last 32 bits.
NAT64_PREFIX = ipaddress.ip_network("64:ff9b::/96")
IPV4_COMPATIBLE_PREFIX = ipaddress.ip_network("::/96")
IPV4_TRANSLATED_PREFIX = ipaddress.ip_network("::ffff:0:0:0/96")
#: Bits 32-63 of an ISATAP interface identifier (RFC 5214), which carries an IPv4 address.
ISATAP_MARKERS = (0x00005EFE, 0x02005EFE)


class UnsafeWebhookURL(ComfyqError, ValueError):
    """A webhook URL that comfyq refuses to call; the message names the reason."""


class UnresolvableWebhookHost(UnsafeWebhookURL):
    """The URL's host name does not resolve (now): refused at submit, retried at delivery."""


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses ``address`` carries, each with the name of the mechanism."""
    last_32_bits = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    found: list[tuple[str, ipaddress.IPv4Address]] = []
    if address.sixtofour is not None:
        found.append(("6to4", address.sixtofour))
    if address.teredo is not None:
        server, client = address.teredo
        found += [("Teredo server", server), ("Teredo client", client)]
    if address in NAT64_PREFIX:
        found.append(("NAT64", last_32_bits))
    if address in IPV4_TRANSLATED_PREFIX:
        found.append(("IPv4-translated", last_32_bits))
    if (address in IPV4_COMPATIBLE_PREFIX and not address.is_loopback
            and not address.is_unspecified):
        found.append(("IPv4-compatible", last_32_bits))
    if (int(address) >> 32) & 0xFFFFFFFF in ISATAP_MARKERS:
        found.append(("ISATAP", last_32_bits))
    return found


@dataclass(frozen=True)
class AddressPolicy:
    """Which non-public addresses are allowed as webhook targets.

    :param allowed_networks: networks whose addresses are allowed though loopback, private,
        link-local or otherwise non-public (metadata, multicast and unspecified addresses never).
    """

    allow_loopback: bool = False
    allow_private: bool = False
    allowed_networks: tuple[IPNetwork, ...] = ()

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
        if self._listed(address):
            return None
        if isinstance(address, ipaddress.IPv6Address):
            for mechanism, inner in embedded_ipv4(address):
                reason = self.refusal(inner)
                if reason:
                    return f"{address} carries {inner} ({mechanism}), and {reason}"
            if address in NAT64_PREFIX:
                return None  # it reaches the IPv4 address it carries, which is allowed
        return self._non_public_refusal(address)

    def _non_public_refusal(self, address: IPAddress) -> str | None:
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

    def _listed(self, address: IPAddress) -> bool:
        return any(address.version == network.version and address in network
                   for network in self.allowed_networks)

    def check_address(self, address: str, target: str) -> None:
        """Raise :class:`UnsafeWebhookURL` naming `target` unless `address` may be called."""
        reason = self.refusal(ipaddress.ip_address(address.split("%", 1)[0]))
        if reason:
            raise UnsafeWebhookURL(f"{target} refused: {reason}")

    def allowed_addresses(self, host: str, port: int, target: str) -> list[str]:
        """Every address `host` resolves to, once each is checked (all must be allowed).

        :raises UnresolvableWebhookHost: the host does not resolve.
        :raises UnsafeWebhookURL: naming `target`, when any address is refused.
        """
        addresses = resolve(host, port)
        for address in addresses:
            self.check_address(address, target)
        return addresses


@dataclass(frozen=True)
class WebhookTarget:
    """Where a webhook URL leads, as the delivering client reads it."""

    scheme: str
    host: str  # an IPv6 literal without its brackets
    port: int


def display_url(url: str) -> str:
    """`url` without credentials or query, which may hold tokens, for messages and logs."""
    try:
        parts = parse_url(url)
    except (LocationParseError, ValueError, TypeError):
        return "<malformed URL>"
    port = f":{parts.port}" if parts.port else ""
    query = "?..." if parts.query else ""
    scheme = f"{parts.scheme}://" if parts.scheme else ""
    return f"{scheme}{parts.host or ''}{port}{parts.path or ''}{query}"


def _unambiguous_text(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise UnsafeWebhookURL("webhook URL must be a non-empty URL without spaces")
    odd = next((char for char in url if not "!" <= char <= "~" or char == "\\"), None)
    if odd is not None:
        raise UnsafeWebhookURL(
            f"webhook URL must be a non-empty URL without spaces, backslashes or characters "
            f"outside printable ASCII (found {odd!r}); write a host in its ASCII (xn--) form "
            "and percent-encode the rest")
    return url


def parse_webhook_url(url: str) -> WebhookTarget:
    """The scheme, host and port ``url`` leads to, read as the delivering client reads it.

    :raises UnsafeWebhookURL: not http(s), no host, credentials in it, or a URL another parser
        would read differently (see the module's docstring).
    """
    url = _unambiguous_text(url)
    try:
        parts = parse_url(url)
        other = urlsplit(url)
        other_reading = (other.scheme.lower(), other.hostname, other.port)
    except (LocationParseError, ValueError):
        raise UnsafeWebhookURL(f"webhook URL {display_url(url)} is malformed: its host or port "
                               "cannot be read") from None
    scheme = (parts.scheme or "").lower()
    if scheme not in ALLOWED_SCHEMES:
        raise UnsafeWebhookURL(
            f"webhook URL {display_url(url)} refused: scheme {scheme or '(none)'!r} "
            "is not http or https")
    if not parts.host:
        raise UnsafeWebhookURL(f"webhook URL {display_url(url)} refused: it names no host")
    if parts.auth is not None:
        raise UnsafeWebhookURL(
            f"webhook URL {display_url(url)} refused: it holds credentials (user@); webhooks "
            "are signed, so a receiver checks the signature instead")
    host = parts.host.removeprefix("[").removesuffix("]")
    if other_reading != (scheme, host.lower(), parts.port):
        raise UnsafeWebhookURL(f"webhook URL {display_url(url)} refused: its host or port "
                               "can be read more than one way")
    return WebhookTarget(scheme, host, parts.port or (443 if scheme == "https" else 80))


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, in the resolver's order (an IP literal: itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnresolvableWebhookHost(f"webhook host {host!r} does not resolve: {error}") from None
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def check_webhook_url(url: str, policy: AddressPolicy | None = None, *,
                      allow_loopback: bool = False, allow_private: bool = False) -> list[str]:
    """Refuse a webhook URL comfyq must not call; returns the addresses its host resolves to.

    :param policy: which addresses are allowed; by default one of ``allow_loopback`` and
        ``allow_private``.
    :raises UnresolvableWebhookHost: the host does not resolve.
    :raises UnsafeWebhookURL: not http(s), no host, credentials, a URL that can be read more
        than one way, a cloud metadata host, or any address that is loopback, private,
        link-local, multicast, unspecified or reserved (or carries such an IPv4 address) and
        not allowed.
    """
    target = parse_webhook_url(url)
    if target.host.lower().rstrip(".") in METADATA_HOSTNAMES:
        raise UnsafeWebhookURL(
            f"webhook URL {display_url(url)} refused: {target.host} is a cloud metadata host")
    policy = policy or AddressPolicy(allow_loopback=allow_loopback, allow_private=allow_private)
    return policy.allowed_addresses(target.host, target.port, f"webhook URL {display_url(url)}")
