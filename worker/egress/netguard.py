"""SSRF protection: refuse URLs that reach loopback, private, link-local or cloud-metadata addresses.

`classify_ip` is pure and says why an address is refused (or None). `check_url` parses a URL the way
httpx will, resolves its host (every address, not just the first) and refuses it unless the host or
each refused address is listed in `AGENTRT_HTTP_ALLOWED_HOSTS` (names, IPs or CIDR networks).

The check and the connection resolve the name separately, so a hostile DNS server could answer
differently the second time (rebinding); literal IPs, metadata names and redirects are always caught.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from worker.errors import StepFailed

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALLOWED_SCHEMES = frozenset({"http", "https"})

# Names that reach a cloud provider's instance metadata service without going through DNS proper.
METADATA_HOSTNAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "metadata.azure.internal",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
        "metadata.packet.net",
    }
)

_METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.253",  # AWS DNS resolver
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IPv6
    )
)

# Ranges that `ipaddress` flags inconsistently across Python versions; listed so the answer is stable.
_EXTRA_BLOCKED: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(n), r)
    for n, r in (
        ("0.0.0.0/8", "'this network' address (0.0.0.0/8)"),
        ("100.64.0.0/10", "shared address space (100.64.0.0/10)"),
        ("192.0.0.0/24", "IETF protocol address (192.0.0.0/24)"),
        ("198.18.0.0/15", "benchmarking address (198.18.0.0/15)"),
        ("240.0.0.0/4", "reserved address (240.0.0.0/4)"),
        ("64:ff9b:1::/48", "local-use NAT64 address (64:ff9b:1::/48)"),
        ("100::/64", "discard-only address (100::/64)"),
    )
)
_LOCALHOST = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_NUMERIC = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


def classify_ip(ip: IPAddress | str) -> str | None:
    """Why connecting to `ip` is refused (e.g. "loopback address"), or None if it is public."""
    addr = ipaddress.ip_address(ip) if isinstance(ip, str) else ip
    if isinstance(addr, ipaddress.IPv6Address):
        # The kernel connects an IPv4-mapped (or NAT64-translated) address to the IPv4 one inside it.
        if addr.ipv4_mapped is not None:
            embedded, how = addr.ipv4_mapped, "IPv4-mapped"
        elif addr in _NAT64:
            embedded, how = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF), "NAT64"
        else:
            embedded, how = None, ""
        if embedded is not None:
            inner = classify_ip(embedded)
            return None if inner is None else f"{how} {embedded}: {inner}"
        if addr.sixtofour is not None and (inner := classify_ip(addr.sixtofour)) is not None:
            return f"6to4 address of {addr.sixtofour}: {inner}"
    if addr.is_unspecified:
        return "unspecified address"
    if addr.is_loopback:
        return "loopback address"
    if addr in _METADATA_IPS:
        return "cloud metadata address"
    if addr.is_link_local:
        return "link-local address"
    if addr.is_multicast:
        return "multicast address"
    for network, reason in _EXTRA_BLOCKED:
        if addr.version == network.version and addr in network:
            return reason
    if addr.is_private:
        return "private address"
    if addr.is_reserved:
        return "reserved address"
    if isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local:
        return "site-local address"
    if not addr.is_global:
        return "non-routable address"
    return None


def parse_ip_literal(host: str) -> IPAddress | None:
    """The address a literal host denotes, including the decimal, octal, hex and short IPv4 forms
    that `inet_aton` (and so the system resolver) accepts: `2130706433`, `0177.0.0.1`, `0x7f.1`."""
    host = host.strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        pass
    if _IPV4_NUMERIC.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class AllowList:
    """`AGENTRT_HTTP_ALLOWED_HOSTS` parsed: exact lowercase names, and networks (an IP is a /32 or /128)."""

    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                names.add(entry.rstrip("."))
        return cls(frozenset(names), tuple(networks))

    def allows_ip(self, addr: IPAddress) -> bool:
        candidates: list[IPAddress] = [addr]
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            candidates.append(addr.ipv4_mapped)
        return any(c.version == n.version and c in n for c in candidates for n in self.networks)


def _refuse(url: str, reason: str) -> StepFailed:
    return StepFailed(
        f"refusing to fetch {display(url)}: {reason} (list it in AGENTRT_HTTP_ALLOWED_HOSTS to allow)",
        retryable=False,
    )


def display(url: str) -> str:
    """The URL without userinfo, query or fragment, which may hold secrets."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
    except ValueError:
        return "<invalid URL>"


async def check_url(url: str, allowed_hosts: Sequence[str]) -> None:
    """Raise a non-retryable `StepFailed` unless `url` is http(s) and reaches only allowed addresses."""
    allow = AllowList.parse(allowed_hosts)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        # httpx will not fetch it anyway; still name an internal target when that is what it is.
        try:
            fallback = urlsplit(url).hostname or ""
        except ValueError:
            fallback = ""
        literal = parse_ip_literal(fallback) if fallback else None
        if literal is not None and (reason := classify_ip(literal)) and not allow.allows_ip(literal):
            raise _refuse(url, _not_public(fallback, literal, reason, resolved=False)) from exc
        raise StepFailed(f"invalid URL {display(url)}: {exc}", retryable=False) from exc
    scheme = parsed.scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise StepFailed(
            f"refusing URL scheme {scheme or '(none)'!r}: only http and https are allowed", retryable=False
        )
    host = parsed.raw_host.decode("ascii").lower().strip("[]")
    if not host:
        raise StepFailed(f"invalid URL {display(url)}: no host", retryable=False)
    name = host.rstrip(".")
    if name in allow.names or parsed.host.lower().rstrip(".") in allow.names:
        return
    if name in METADATA_HOSTNAMES:
        raise _refuse(url, f"{name} is a cloud metadata host")

    literal = parse_ip_literal(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    elif name == "localhost" or name.endswith(".localhost"):
        addresses = list(_LOCALHOST)  # RFC 6761: loopback, whatever the resolver would say
    else:
        addresses = await resolve(host, parsed.port or (443 if scheme == "https" else 80))
    for addr in addresses:
        reason = classify_ip(addr)
        if reason is not None and not allow.allows_ip(addr):
            raise _refuse(url, _not_public(host, addr, reason, resolved=literal is None))


def _not_public(host: str, addr: IPAddress, reason: str, *, resolved: bool) -> str:
    if resolved:
        return f"{host} resolves to {addr}, which is not a public address ({reason})"
    try:
        canonical = ipaddress.ip_address(host.split("%", 1)[0]) == addr
    except ValueError:
        canonical = False
    if canonical:
        return f"{host} is not a public address ({reason})"
    return f"{host} is another spelling of {addr}, which is not a public address ({reason})"


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to (a failure is a StepFailed: retryable only if temporary)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        # EAI_AGAIN is a temporary resolver failure; anything else (no such name) will not heal soon.
        raise StepFailed(
            f"cannot resolve host {host}: {exc.strerror or exc}", retryable=exc.errno == socket.EAI_AGAIN
        ) from exc
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canon, sockaddr in infos:
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if addr not in addresses:
            addresses.append(addr)
    if not addresses:
        raise StepFailed(f"cannot resolve host {host}: no addresses", retryable=True)
    return addresses
