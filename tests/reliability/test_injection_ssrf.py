"""Injection and SSRF, end to end through a worker process.

- Data that looks like a template (`${{ }}`, Jinja `{{ }}`, `__class__` payloads), coming from a step's
  output or from run inputs, is passed on literally by later steps: never evaluated.
- HTTP steps refuse internal targets that AGENTRT_HTTP_ALLOWED_HOSTS does not list (the test settings
  list only 127.0.0.1 and localhost, for the sink): other loopback addresses, other spellings of them
  (hex, octal, decimal, short forms), IPv6 loopback and IPv4-mapped forms, 0.0.0.0, and redirects to
  them. Canary listeners on 127.0.0.2 and [::1] prove that no connection was even attempted.
- Cloud-metadata addresses are checked through `check_url` without a worker: a failing guard would
  send real packets to 169.254.169.254, which a test on this network must never do.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.support.chaos import Canary
from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, write_workflow
from tests.support.services import WorkerProcs
from worker.config import Settings
from worker.egress.netguard import check_url
from worker.errors import StepFailed

PAYLOADS = {
    "gha": "${{ inputs.secret }}",
    "arith": "${{ 7*7 }}",
    "dunder": "${{ run.__class__.__mro__[1].__subclasses__() }}",
    "jinja": "{{ 7*7 }}{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "jinja_block": "{% for x in ().__class__.__base__.__subclasses__() %}{{ x }}{% endfor %}",
    "nested": {"deeper": ["${{ steps.fetch.output }}", "$${{ 1 }}"]},
    "import": "${{ __import__('os').system('touch /tmp/agentrt-pwned') }}",
}

INJECT = """
name: inject
inputs:
  sink: {type: string}
  secret: {type: string, default: "s3cr3t"}
  note: {type: string}
steps:
  - {id: fetch, uses: http, with: {url: "${{ inputs.sink }}/payload"}}
  - id: echo
    uses: http
    with:
      method: POST
      url: "${{ inputs.sink }}/echo"
      json:
        whole: "${{ steps.fetch.output.json }}"
        gha: "${{ steps.fetch.output.json.gha }}"
        inline: "before ${{ steps.fetch.output.json.jinja }} after"
        note: "${{ inputs.note }}"
  - id: again
    uses: set
    with: {dunder: "${{ steps.fetch.output.json.dunder }}", note: "${{ inputs.note }}"}
output: "${{ steps.again.output }}"
"""


async def test_step_outputs_and_inputs_are_never_evaluated(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs) -> None:
    http_sink.script("/payload", [(200, {}, PAYLOADS)])
    write_workflow(settings, "inject.yaml", INJECT)
    worker = worker_procs.start(name="w")
    worker.wait_for_log("worker test-w")
    note = "${{ inputs.secret }} {{ 7*7 }} __class__"
    async with client_for(settings) as client:
        run_id = await client.start_run("inject", {"sink": http_sink.url, "note": note})
        summary = await client.wait_for_run(run_id, timeout=60)
        detail = await client.get_run(run_id)
    assert summary.status.value == "completed", summary.error
    (echo,) = [r for r in http_sink.requests if r.path == "/echo"]
    body = json.loads(echo.body)
    assert body == {"whole": PAYLOADS, "gha": PAYLOADS["gha"], "inline": f"before {PAYLOADS['jinja']} after",
                    "note": note}
    assert detail.output == {"dunder": PAYLOADS["dunder"], "note": note}
    assert "s3cr3t" not in echo.body.decode() and "49" not in json.dumps(detail.output)


SSRF = """
name: ssrf
inputs: {url: {type: string}}
steps:
  - id: get
    uses: http
    retry: {max_attempts: 1}
    with: {url: "${{ inputs.url }}", follow_redirects: true}
"""


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def canaries() -> Iterator[dict[str, Canary]]:
    found = {"v4": Canary("127.0.0.2")}
    if _ipv6_loopback():
        found["v6"] = Canary("::1")
    yield found
    for c in found.values():
        c.close()


async def test_http_steps_refuse_internal_targets(
        settings: Settings, http_sink: HttpSink, worker_procs: WorkerProcs, canaries: dict[str, Canary]) -> None:
    p4 = canaries["v4"].port
    sink_port = http_sink.url.rsplit(":", 1)[1]
    targets = [
        f"http://127.0.0.2:{p4}/plain",
        f"http://0x7f.0.0.2:{p4}/hex",
        f"http://0x7f000002:{p4}/hex-int",
        f"http://2130706434:{p4}/decimal",
        f"http://0177.0.0.2:{p4}/octal",
        f"http://127.2:{p4}/short",
        f"http://127.0.2:{p4}/short3",
        f"http://[::ffff:127.0.0.2]:{p4}/mapped",
        f"http://[::ffff:7f00:2]:{p4}/mapped-hex",
        f"http://0.0.0.0:{sink_port}/zero",
        f"http://0:{sink_port}/zero-short",
        f"{http_sink.url}/redirect-internal",
        f"{http_sink.url}/redirect-decimal",
    ]
    if "v6" in canaries:
        p6 = canaries["v6"].port
        targets += [f"http://[::1]:{p6}/v6", f"http://[0:0:0:0:0:0:0:1]:{p6}/v6-long"]
    http_sink.script("/redirect-internal", [(302, {"Location": f"http://127.0.0.2:{p4}/via-redirect"}, "")])
    http_sink.script("/redirect-decimal", [(307, {"Location": f"http://2130706434:{p4}/via-redirect"}, "")])
    write_workflow(settings, "ssrf.yaml", SSRF)
    worker = worker_procs.start(name="w")
    worker.wait_for_log("worker test-w")
    async with client_for(settings) as client:
        ok = await client.start_run("ssrf", {"url": f"{http_sink.url}/allowed"})  # the control: allowed
        ids = {url: await client.start_run("ssrf", {"url": url}) for url in targets}
        assert (await client.wait_for_run(ok, timeout=60)).status.value == "completed"
        errors = {}
        for url, run_id in ids.items():
            summary = await client.wait_for_run(run_id, timeout=60)
            errors[url] = (summary.status.value, summary.error or "")
    leaked = {u: e for u, e in errors.items() if e[0] != "failed" or "refusing" not in e[1]}
    assert not leaked, leaked
    assert all(not c.hits for c in canaries.values()), {k: c.hits for k, c in canaries.items()}
    assert http_sink.count("/zero") == 0 and http_sink.count("/zero-short") == 0
    assert worker.alive()


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.170.2/v2/credentials",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://2852039166/latest/meta-data/",  # 169.254.169.254 as one decimal number
    "http://0xa9.0xfe.0xa9.0xfe/",
    "http://0251.0376.0251.0376/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/",
    "http://100.100.100.200/latest/meta-data/",
])
async def test_metadata_targets_are_refused_before_connecting(url: str) -> None:
    with pytest.raises(StepFailed) as refused:
        await check_url(url, ("127.0.0.1", "localhost"))
    assert "refusing" in refused.value.reason and not refused.value.retryable
