"""SSRF guard: pure classification, literal-IP spellings, metadata names, allow-list overrides."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from worker.egress.netguard import check_url, classify_ip, parse_ip_literal
from worker.errors import StepFailed


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("100.64.0.1", "shared address space"),
        ("100.127.255.254", "shared address space"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("0.1.2.3", "this network"),
        ("192.0.0.192", "metadata"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "metadata"),
        ("2002:7f00:1::", "loopback"),
    ],
)
def test_classify_refuses_internal_addresses(ip: str, expected: str) -> None:
    reason = classify_ip(ip)
    assert reason is not None
    assert expected in reason


@pytest.mark.parametrize(
    "ip",
    [
        "8.8.8.8",
        "1.1.1.1",
        "93.184.216.34",
        "2606:4700:4700::1111",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "100.128.0.1",
    ],
)
def test_classify_accepts_public_addresses(ip: str) -> None:
    assert classify_ip(ip) is None


def test_classify_takes_address_objects() -> None:
    assert classify_ip(ipaddress.ip_address("127.0.0.1")) == "loopback address"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),  # decimal
        ("0177.0.0.1", "127.0.0.1"),  # octal
        ("0x7f.0.0.1", "127.0.0.1"),  # hex octet
        ("0x7f000001", "127.0.0.1"),  # hex
        ("127.1", "127.0.0.1"),  # short form
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:7f00:1"),
        ("example.com", None),
        ("deadbeef", None),
        ("1.2.3.4.5", None),
    ],
)
def test_parse_ip_literal(host: str, expected: str | None) -> None:
    parsed = parse_ip_literal(host)
    assert (str(parsed) if parsed is not None else None) == expected


async def refused(url: str, allowed: tuple[str, ...] = ()) -> StepFailed:
    with pytest.raises(StepFailed) as info:
        await check_url(url, allowed)
    assert info.value.retryable is False
    return info.value


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://0x7f.0.0.1/", "loopback"),
        ("http://0x7f000001:8080/admin", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://[::1]/", "loopback"),
        ("http://[::1]:9000/x", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://[::ffff:a9fe:a9fe]/", "metadata"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://2852039166/", "metadata"),  # 169.254.169.254 in decimal
        ("https://10.0.0.8/", "private"),
        ("http://[fd00::1]/", "private"),
        ("http://[fe80::1]/", "link-local"),
        ("http://100.64.1.1/", "shared"),
        ("http://0.0.0.0:8000/", "unspecified"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("http://METADATA.GOOGLE.INTERNAL./", "metadata"),
        ("http://metadata/", "metadata"),
        ("http://localhost:8080/", "loopback"),
        ("http://api.localhost/", "loopback"),
    ],
)
async def test_check_url_refuses(url: str, fragment: str) -> None:
    error = await refused(url)
    assert fragment in error.reason
    assert "AGENTRT_HTTP_ALLOWED_HOSTS" in error.reason


async def test_refusal_hides_query_and_userinfo() -> None:
    error = await refused("http://user:hunter2@127.0.0.1/x?token=s3cret")
    assert "hunter2" not in error.reason
    assert "s3cret" not in error.reason


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "file:///etc/passwd",
        "gopher://127.0.0.1/",
        "javascript:alert(1)",
        "example.com/path",
    ],
)
async def test_check_url_refuses_other_schemes(url: str) -> None:
    error = await refused(url)
    assert "scheme" in error.reason


async def test_check_url_refuses_url_without_host() -> None:
    await refused("http:///path")


@pytest.mark.parametrize(
    "url", ["http://8.8.8.8/", "https://1.1.1.1:8443/x?q=1", "http://[2606:4700::1111]/"]
)
async def test_check_url_accepts_public_literals(url: str) -> None:
    await check_url(url, ())


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1:8080/", ("127.0.0.1",)),
        ("http://2130706433/", ("127.0.0.1",)),  # the allow-list matches the address, however spelled
        ("http://[::1]/", ("::1",)),
        ("http://[::1]/", ("[::1]",)),
        ("http://[::ffff:127.0.0.1]/", ("127.0.0.1",)),
        ("http://10.1.2.3/", ("10.0.0.0/8",)),
        ("http://[fd00::5]/", ("fd00::/8",)),
        ("http://localhost:9000/", ("localhost",)),
        ("http://LocalHost:9000/", ("LOCALHOST",)),
        ("http://metadata.google.internal/", ("metadata.google.internal",)),
        ("http://169.254.169.254/", ("169.254.169.254/32",)),
    ],
)
async def test_allowed_hosts_override(url: str, allowed: tuple[str, ...]) -> None:
    await check_url(url, allowed)


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://127.0.0.1/", ("10.0.0.0/8",)),
        ("http://10.1.2.3/", ("10.1.2.4",)),
        ("http://169.254.169.254/", ("127.0.0.1", "localhost")),
        ("http://metadata.google.internal/", ("169.254.169.254",)),
        ("http://127.0.0.2/", ("127.0.0.1",)),
    ],
)
async def test_allowed_hosts_are_exact(url: str, allowed: tuple[str, ...]) -> None:
    await refused(url, allowed)


async def test_localhost_names_count_as_both_loopback_addresses() -> None:
    error = await refused("http://localhost/", ("127.0.0.1",))  # ::1 is not listed
    assert "::1" in error.reason
    await check_url("http://localhost/", ("127.0.0.1", "::1"))
    await check_url("http://localhost/", ("127.0.0.0/8", "::1/128"))


async def test_resolved_names_are_checked_on_every_address() -> None:
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        with pytest.raises(StepFailed, match="cannot resolve"):
            await check_url(f"http://{name}/", ())
        return
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos}
    internal = {a for a in addresses if classify_ip(a) is not None}
    if internal:
        error = await refused(f"http://{name}/")
        assert "resolves to" in error.reason
        await check_url(f"http://{name}/", tuple(str(a) for a in internal))  # each one allowed
    else:
        await check_url(f"http://{name}/", ())


async def test_unresolvable_host_fails() -> None:
    with pytest.raises(StepFailed, match=r"cannot resolve host nothing-here\.invalid"):
        await check_url("http://nothing-here.invalid/", ())
