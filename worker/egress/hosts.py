"""Host lists an operator writes: exact names, `*.example.com` suffix patterns, IPs, CIDR networks, base URLs.

`HostList.parse(entries, variable)` is strict (a typo in a security setting is a ConfigError naming the
variable, never a silently ignored entry). Matching is pure: `match_name` on the URL's host, and
`match_addresses` for the networks once the host's addresses are known.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import httpx

from worker.egress.netguard import IPAddress, IPNetwork, parse_ip_literal
from worker.errors import ConfigError

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


@dataclass(frozen=True, slots=True)
class BaseUrl:
    """A URL prefix: scheme, host, port and path must match (`http://127.0.0.1:8080/v1`)."""

    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, text: str) -> BaseUrl:
        url = httpx.URL(text)
        port = url.port or (443 if url.scheme == "https" else 80)
        return cls(url.scheme, url.host.lower().rstrip("."), port, url.path.rstrip("/"))

    def covers(self, url: httpx.URL) -> bool:
        port = url.port or (443 if url.scheme == "https" else 80)
        path = url.path
        return (url.scheme == self.scheme and url.host.lower().rstrip(".") == self.host and port == self.port
                and (path == self.path or path.startswith(self.path + "/") or not self.path))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


@dataclass(frozen=True, slots=True)
class HostList:
    """A parsed host list; empty means "no entries" (what that implies is the caller's rule)."""

    names: frozenset[str]
    suffixes: tuple[str, ...]  # ".example.com" for "*.example.com" (the apex itself is not included)
    networks: tuple[IPNetwork, ...]
    urls: tuple[BaseUrl, ...]
    entries: tuple[str, ...]  # as written, for messages and `agentrt doctor`

    @classmethod
    def parse(cls, entries: Iterable[str], variable: str, *, urls: bool = False) -> HostList:
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        base_urls: list[BaseUrl] = []
        kept: list[str] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            kept.append(entry)
            if "://" in entry:
                if not urls:
                    raise ConfigError(f"{variable}: {entry!r}: give a host name, *.domain or a network, not a URL")
                try:
                    base = BaseUrl.parse(entry)
                except httpx.InvalidURL as exc:
                    raise ConfigError(f"{variable}: {entry!r} is not a valid URL: {exc}") from exc
                if base.scheme not in ("http", "https") or not base.host:
                    raise ConfigError(f"{variable}: {entry!r}: only http(s) URLs with a host")
                base_urls.append(base)
            elif entry.startswith("*."):
                suffix = entry[1:].rstrip(".")
                if suffix.count(".") < 2 or not _valid_name(suffix[1:]):
                    raise ConfigError(f"{variable}: {entry!r}: a pattern names a domain with at least two labels "
                                      "(*.example.com), never a whole top-level domain")
                suffixes.append(suffix)
            elif "*" in entry:
                raise ConfigError(f"{variable}: {entry!r}: '*' is only allowed as a leading '*.' "
                                  "(leave the variable unset to allow every host)")
            elif "/" in entry:
                try:
                    networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError as exc:
                    raise ConfigError(f"{variable}: {entry!r} is not a valid network: {exc}") from exc
            elif (literal := parse_ip_literal(entry)) is not None:
                networks.append(ipaddress.ip_network(literal))
            else:
                name = entry.rstrip(".")
                if not _valid_name(name):
                    raise ConfigError(f"{variable}: {entry!r} is not a host name, *.domain, IP or network")
                names.add(name)
        return cls(frozenset(names), tuple(suffixes), tuple(networks), tuple(base_urls), tuple(kept))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def match_name(self, host: str) -> bool:
        """The host (a name or an IP literal) is listed by name, pattern or network."""
        name = host.lower().strip("[]").rstrip(".")
        if name in self.names or any(name.endswith(s) for s in self.suffixes):
            return True
        literal = parse_ip_literal(name)
        return literal is not None and self.match_addresses([literal])

    def match_addresses(self, addresses: Sequence[IPAddress]) -> bool:
        """Every address is inside a listed network (an IPv4-mapped IPv6 address counts as its IPv4)."""
        if not self.networks or not addresses:
            return False

        def inside(addr: IPAddress) -> bool:
            candidates: list[IPAddress] = [addr]
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                candidates.append(addr.ipv4_mapped)
            return any(c.version == n.version and c in n for c in candidates for n in self.networks)

        return all(inside(a) for a in addresses)

    def match_url(self, url: httpx.URL) -> bool:
        """A listed base URL covers `url`, or its host is listed (name, pattern, IP literal in a network)."""
        return any(base.covers(url) for base in self.urls) or self.match_name(url.host)
