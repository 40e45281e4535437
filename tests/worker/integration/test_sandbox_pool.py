"""`python` steps in sandbox processes (AGENTRT_PYTHON_ISOLATION=process): real processes, real pipes.

The task module is written into the test's own workflows directory, the way an operator deploys one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.runtime import client_for, running_worker, write_workflow
from worker.config import Settings
from worker.errors import ConfigError, StepFailed
from worker.models import RunId
from worker.steps.base import StepContext, idempotency_key
from worker.steps.python_step import PythonExecutor
from worker.telemetry.logging import StepLogCapture, StepLogContext, current_step, register_step_secrets

TASKS = '''
import asyncio, logging, os, sys, time
from worker.errors import StepFailed

log = logging.getLogger("sbx.tasks")

def add(a, b):
    return {"sum": a + b, "pid": os.getpid()}

async def async_mul(a, b):
    await asyncio.sleep(0.01)
    return {"product": a * b, "pid": os.getpid()}

def context(ctx):
    return {"run_id": ctx.run_id, "workflow": ctx.workflow, "step_id": ctx.step_id, "item": ctx.item,
            "attempt": ctx.attempt, "key": ctx.idempotency_key, "key_2": ctx.key_for(2), "timeout": ctx.timeout,
            "traceparent": ctx.traceparent, "secrets": {k: dict(v) for k, v in ctx.secrets.items()},
            "has_settings": hasattr(ctx, "settings")}

def chatty(ctx):
    token = ctx.secrets["api"]["token"]
    ctx.logger.info("calling the API with %s", token)
    log.warning("a warning from the module logger")
    print("printed to stdout", token)
    print("printed to stderr", file=sys.stderr)
    os.write(1, b"written to fd 1\\n")
    sys.stdout.write(bytes(range(256)).decode("latin-1") + "\\n")  # not a frame: must not corrupt the pipe
    return "ok"

def tuple_result():
    return (1, "two", None, {"x": [1.5]})

def not_json():
    return {1, 2}

def boom():
    raise KeyError("missing thing")

def final():
    raise StepFailed("the ticket is closed", retryable=False)

def later():
    raise StepFailed("rate limited", retryable=True, retry_after=7.5)

def exits():
    sys.exit(4)

def sleep(seconds, pidfile=None):
    if pidfile:
        with open(pidfile, "w") as f:
            f.write(str(os.getpid()))
    time.sleep(seconds)
    return "slept"

def spin(seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    return "spun"

def hog(mb):
    chunks = [bytearray(1024 * 1024) for _ in range(mb)]
    return len(chunks)

def crash():
    os._exit(3)

def modules():
    return sorted(sys.modules)
'''


def make_ctx(step_id: str = "py", *, secrets: dict[str, dict[str, Any]] | None = None,
             timeout: float | None = None) -> StepContext:
    return StepContext(
        run_id=RunId("run-7"), workflow="wf", step_id=step_id, item=3, attempt=2,
        idempotency_key=idempotency_key("run-7", step_id, 3), timeout=timeout, settings=Settings(),
        logger=logging.getLogger("test"), secrets=secrets or {},
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")


def sandbox_settings(tmp_path: Path, **overrides: Any) -> Settings:
    workflows = tmp_path / "workflows"
    workflows.mkdir(exist_ok=True)
    (workflows / "sbx_tasks.py").write_text(TASKS)
    values: dict[str, Any] = {"workflows_dir": workflows, "sandbox_min": 1, "sandbox_max": 4, **overrides}
    return Settings(**values)


@pytest.fixture
async def ex(tmp_path: Path) -> AsyncIterator[PythonExecutor]:
    executor = PythonExecutor(sandbox_settings(tmp_path))
    await executor.start()
    yield executor
    await executor.aclose()


async def call(ex: PythonExecutor, name: str, args: dict[str, Any] | None = None, **ctx: Any) -> Any:
    return await ex.execute({"function": f"sbx_tasks:{name}", "args": args or {}}, make_ctx(**ctx))


async def fails(ex: PythonExecutor, name: str, args: dict[str, Any] | None = None) -> StepFailed:
    with pytest.raises(StepFailed) as info:
        await call(ex, name, args)
    return info.value


def pool_pids(ex: PythonExecutor) -> list[int]:
    assert ex.pool is not None
    return ex.pool.pids()


async def test_sync_and_async_functions_run_in_a_sandbox_process(ex: PythonExecutor) -> None:
    out = await call(ex, "add", {"a": 2, "b": 3})
    assert out["sum"] == 5
    assert out["pid"] != os.getpid() and out["pid"] in pool_pids(ex)
    product = await call(ex, "async_mul", {"a": 4, "b": 5})
    assert product == {"product": 20, "pid": out["pid"]}  # one warm process serves both


async def test_ctx_carries_the_attempt_and_the_steps_secrets_only(ex: PythonExecutor) -> None:
    out = await call(ex, "context", secrets={"api": {"token": "tok-123456"}}, timeout=9.0)
    assert out == {"run_id": "run-7", "workflow": "wf", "step_id": "py", "item": 3, "attempt": 2,
                   "key": "agentrt:run-7:py[3]", "key_2": "agentrt:run-7:py[3].2", "timeout": 9.0,
                   "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                   "secrets": {"api": {"token": "tok-123456"}}, "has_settings": False}


@contextmanager
def captured_logs() -> Iterator[StepLogCapture]:
    """Every log record (DEBUG and up) while the block runs, as the step log capture stores them."""
    capture = StepLogCapture()
    root = logging.getLogger()
    root.addHandler(capture)
    old_level = root.level
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)


async def test_log_lines_and_printed_output_are_the_steps_log_lines_redacted(ex: PythonExecutor) -> None:
    secret = "tok-very-secret-42"
    with captured_logs() as capture:
        token = current_step.set(StepLogContext("run-7", "py", 3, 2, "t" * 32, "s" * 16))
        try:
            register_step_secrets([secret])
            assert await call(ex, "chatty", secrets={"api": {"token": secret}}) == "ok"
            await asyncio.sleep(0.2)  # fd-level output arrives on its own pipe
            after = await call(ex, "add", {"a": 1, "b": 1})  # the protocol survived the noise
        finally:
            current_step.reset(token)
    rows = capture.drain()
    lines = {(row[6], row[7]) for row in rows}
    assert ("sbx_tasks", "calling the API with ***") in lines
    assert ("sbx.tasks", "a warning from the module logger") in lines
    assert ("task.stdout", "printed to stdout ***") in lines
    assert ("task.stderr", "printed to stderr") in lines
    assert ("task.stderr", "written to fd 1") in lines
    assert all(secret not in message for _, message in lines)
    assert {(row[0], row[1], row[3]) for row in rows} == {("run-7", "py", 2)}  # attributed to the step
    assert after["sum"] == 2


async def test_results_are_json_and_errors_keep_their_kind(ex: PythonExecutor) -> None:
    assert await call(ex, "tuple_result") == [1, "two", None, {"x": [1.5]}]
    not_json = await fails(ex, "not_json")
    assert (not_json.reason, not_json.retryable) == ("sbx_tasks:not_json returned a value that is not JSON: set",
                                                     False)
    boom = await fails(ex, "boom")
    assert (boom.reason, boom.retryable) == ("KeyError: 'missing thing'", True)
    final = await fails(ex, "final")
    assert (final.reason, final.retryable) == ("the ticket is closed", False)
    later = await fails(ex, "later")
    assert (later.reason, later.retryable, later.retry_after) == ("rate limited", True, 7.5)
    exits = await fails(ex, "exits")
    assert (exits.reason, exits.retryable) == ("SystemExit: 4", True)
    bad = await fails(ex, "add", {"a": 1})
    assert bad.retryable is False and "bad arguments" in bad.reason
    assert (await call(ex, "add", {"a": 1, "b": 2}))["sum"] == 3  # none of it cost the process


async def test_a_timeout_kills_the_process_and_the_next_step_gets_a_fresh_one(ex: PythonExecutor,
                                                                              tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await call(ex, "sleep", {"seconds": 30, "pidfile": str(pidfile)})
    stuck = int(pidfile.read_text())
    await _until(lambda: not psutil.pid_exists(stuck), "the timed-out sandbox is gone")
    out = await call(ex, "add", {"a": 1, "b": 1})
    assert out["pid"] != stuck and out["sum"] == 2


async def test_a_step_that_overruns_fails_as_a_timeout_in_a_real_worker(settings: Settings) -> None:
    (settings.workflows_dir / "sbx_tasks.py").write_text(TASKS)
    write_workflow(settings, "slow.yaml", """
        name: slow
        steps:
          - id: spin
            uses: python
            timeout: 500ms
            retry: {max_attempts: 2, initial_interval: 100ms}
            with: {function: "sbx_tasks:spin", args: {seconds: 30}}
        """)
    started = time.monotonic()
    async with running_worker(replace(settings, sandbox_min=1)) as worker, client_for(settings) as client:
        run_id = await client.start_run("slow")
        summary = await client.wait_for_run(run_id, timeout=30)
        detail = await client.get_run(run_id)
        python = worker.executors["python"]
        assert isinstance(python, PythonExecutor) and python.pool is not None
        await _until(lambda: python.pool is not None and python.pool.size >= 1, "a replacement sandbox")
        survivors = python.pool.pids()
    assert summary.status.value == "failed"
    assert [a.error for a in detail.steps[0].attempts] == ["timed out after 0.5s"] * 2
    assert time.monotonic() - started < 20
    # the spinning processes were killed: only the fresh ones are left, none of them busy
    assert all(psutil.Process(pid).cpu_percent(interval=0.2) < 50 for pid in survivors if psutil.pid_exists(pid))


async def test_kill_9_of_a_busy_sandbox_is_a_retryable_error_and_a_fresh_sandbox(ex: PythonExecutor,
                                                                                 tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    step = asyncio.create_task(call(ex, "sleep", {"seconds": 30, "pidfile": str(pidfile)}))
    await _until(lambda: pidfile.exists() and pidfile.read_text() != "", "the step is running")
    busy = int(pidfile.read_text())
    os.kill(busy, signal.SIGKILL)
    with pytest.raises(StepFailed) as info:
        await step
    assert info.value.retryable is True
    assert info.value.reason == ("the sandbox process running this step died (signal 9, SIGKILL: killed (out of "
                                 "memory, or by an operator)); a fresh one was started")
    out = await call(ex, "add", {"a": 2, "b": 2})
    assert out["pid"] != busy and out["sum"] == 4


async def test_a_crash_is_a_clean_step_error(ex: PythonExecutor) -> None:
    error = await fails(ex, "crash")
    assert error.retryable is True
    assert error.reason == "the sandbox process running this step died (exit code 3); a fresh one was started"
    assert (await call(ex, "add", {"a": 0, "b": 1}))["sum"] == 1


async def test_memory_past_the_limit_fails_the_step_cleanly(tmp_path: Path) -> None:
    ex = PythonExecutor(sandbox_settings(tmp_path, sandbox_memory_mb=256))
    try:
        error = await fails(ex, "hog", {"mb": 600})
        assert error.retryable is True
        assert error.reason.startswith(("MemoryError", "the sandbox process running this step died"))
        assert await call(ex, "hog", {"mb": 20}) == 20  # a modest step still runs
    finally:
        await ex.aclose()


async def test_the_pool_grows_to_its_maximum_and_no_further(tmp_path: Path) -> None:
    ex = PythonExecutor(sandbox_settings(tmp_path, sandbox_min=1, sandbox_max=3))
    try:
        results = await asyncio.gather(*(call(ex, "sleep", {"seconds": 0.3}) for _ in range(7)))
        assert results == ["slept"] * 7
        assert ex.pool is not None and ex.pool.started_total == 3 and ex.pool.size == 3
    finally:
        await ex.aclose()


async def test_a_thousand_steps_leave_no_process_behind(tmp_path: Path) -> None:
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    ex = PythonExecutor(sandbox_settings(tmp_path, sandbox_min=2, sandbox_max=4))
    failures = 0
    for batch in range(100):
        calls = [call(ex, "add", {"a": batch, "b": i}) for i in range(9)] + [call(ex, "crash")]
        for result in await asyncio.gather(*calls, return_exceptions=True):
            failures += isinstance(result, StepFailed)
    assert ex.pool is not None
    assert failures == 100 and ex.pool.size <= 4
    await ex.aclose()
    children = me.children(recursive=True)
    assert {p.pid for p in children} - before == set()
    assert [p.pid for p in children if p.status() == psutil.STATUS_ZOMBIE] == []


async def test_the_sandbox_imports_none_of_the_workers_services(ex: PythonExecutor) -> None:
    modules = await call(ex, "modules")
    heavy = [m for m in modules if m.split(".")[0] in ("asyncpg", "redis", "hvac", "opentelemetry", "httpx")]
    assert heavy == []
    assert "sbx_tasks" in modules
    assert ex.pool is not None and ex.pool.startup_ms and max(ex.pool.startup_ms) < 2000


@pytest.mark.parametrize("name", ["VAULT_TOKEN", "vault_addr", "AGENTRT_DATABASE_URL", "OTEL_EXPORTER_OTLP_HEADERS",
                                  "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "DB_PASSWORD", "OPENAI_API_KEY"])
def test_the_operator_cannot_allow_identity_variables_into_a_sandbox(tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        PythonExecutor(sandbox_settings(tmp_path, sandbox_env_allow=("LANG", name)))
    assert f"AGENTRT_SANDBOX_ENV_ALLOW names {name!r}" in str(info.value)
    assert "ctx.secrets" in str(info.value)


def test_an_unknown_sandbox_user_fails_the_pool_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="AGENTRT_SANDBOX_USER='no-such-user-x': no such user"):
        PythonExecutor(sandbox_settings(tmp_path, sandbox_user="no-such-user-x"))


async def test_a_sandbox_user_takes_effect_or_the_pool_says_why_not(tmp_path: Path) -> None:
    """As root, AGENTRT_SANDBOX_USER=nobody: the task runs as nobody (and cannot read a root-only file),
    or, where nobody cannot read the Python installation, the start fails saying so."""
    import pwd

    assert os.geteuid() == 0, "this test needs a root worker"
    secret = tmp_path / "root-only"
    secret.write_text("x")
    os.chmod(secret, 0o600)
    nobody = pwd.getpwnam("nobody").pw_uid
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "who.py").write_text(
        "import os\n"
        "def who(path):\n"
        "    try:\n"
        "        open(path).read()\n"
        "        readable = True\n"
        "    except PermissionError:\n"
        "        readable = False\n"
        "    return {'uid': os.getuid(), 'gid': os.getgid(), 'readable': readable}\n")
    os.chmod(tmp_path, 0o755)
    ex = PythonExecutor(sandbox_settings(tmp_path, sandbox_user="nobody"))
    try:
        try:
            await ex.start()
        except ConfigError as exc:
            assert "sandbox setup failed" in str(exc) and f"runs as uid {nobody}" in str(exc), str(exc)
            assert sys.base_prefix in str(exc)
            return
        out = await ex.execute({"function": "who:who", "args": {"path": str(secret)}}, make_ctx())
        assert out == {"uid": nobody, "gid": pwd.getpwnam("nobody").pw_gid, "readable": False}
    finally:
        await ex.aclose()


async def test_inline_mode_still_runs_in_the_workers_process(tmp_path: Path) -> None:
    ex = PythonExecutor(sandbox_settings(tmp_path, python_isolation="inline"))
    try:
        assert (await call(ex, "add", {"a": 1, "b": 2}))["pid"] == os.getpid()
        assert ex.pool is None
    finally:
        await ex.aclose()


async def _until(check: Any, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.02)

