"""Hot-reloading malformed workflow files into a running worker's directory: the worker stays up,
runs nothing from them, keeps the previous good version of a workflow active, reports every error
with its location, and its memory and time stay bounded."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.support.chaos import CORPUS, bad_files, chaos_stack

FILE_LEVEL = frozenset({"zz-huge.yaml", "zz-symlink.yaml"})  # refused as a whole, before any line is read
PWNED = Path("/tmp/agentrt-pwned")  # what the corpus's `!!python/object/apply:os.system` would create


@pytest.fixture(scope="module")
def outcome() -> dict[str, Any]:
    """One worker, one reload storm; the tests below read its outcome."""
    PWNED.unlink(missing_ok=True)

    async def scenario() -> dict[str, Any]:
        async with chaos_stack() as stack:
            return await bad_files(stack, big_mb=50, timeout=60)

    return asyncio.run(scenario())


def test_corpus_is_not_empty() -> None:
    assert len([p for p in CORPUS.iterdir() if p.suffix == ".yaml"]) >= 30


def test_worker_survives_and_runs_nothing_from_bad_files(outcome: dict[str, Any]) -> None:
    assert outcome["worker_alive"], outcome["log"][-3000:]
    assert outcome["evil_requests"] == 0
    assert outcome["workflows_with_runs"] == ["victim"]
    assert not PWNED.exists()
    assert "Traceback" not in outcome["log"], outcome["log"][-5000:]


def test_previous_good_version_stays_active(outcome: dict[str, Any]) -> None:
    assert outcome["victim_status"] == "completed"
    assert outcome["victim_hash_kept"]


def test_every_bad_file_is_reported_invalid(outcome: dict[str, Any]) -> None:
    missing = {name: info for name, info in outcome["reported"].items() if info is None or info.status != "invalid"}
    assert not missing, missing
    assert all(info.error for info in outcome["reported"].values())


def test_every_error_has_a_line(outcome: dict[str, Any]) -> None:
    without = sorted(name for name, info in outcome["reported"].items()
                     if info is not None and not info.error_line and name not in FILE_LEVEL)
    assert not without, {n: outcome["reported"][n].error for n in without}


@pytest.mark.parametrize("name", sorted(FILE_LEVEL))
def test_file_level_errors_have_a_line(outcome: dict[str, Any], name: str) -> None:
    info = outcome["reported"][name]
    assert info is not None and info.error_line


def test_memory_and_time_bounded(outcome: dict[str, Any]) -> None:
    # a 50 MB file must not be read whole (let alone parsed): allow generous noise, not 50 MB+ growth
    assert outcome["rss_peak_mb"] - outcome["rss_before_mb"] < 45, outcome
    assert outcome["report_s"] < 60, outcome


# -- a NUL byte in a workflow file --------------------------------------------------------------
# The loader refuses it correctly (line 3: "unacceptable character #x0000"), but the error's excerpt
# (the offending line, NUL included) is then written to workflow_files.excerpt, and Postgres refuses
# NUL in text: record_invalid raises CharacterNotInRepertoireError.

NUL_FILE = b'name: bad-nul\nsteps:\n  - {id: a, uses: set, with: {x: "a\x00b"}}\n'


async def test_nul_byte_file_is_reported_and_does_not_stall_reloads() -> None:
    from tests.support.chaos import GOOD_VICTIM, until

    async with chaos_stack() as stack:
        stack.write("victim.yaml", GOOD_VICTIM)
        worker = stack.start_worker("reload")
        await stack.wait_ready(worker)
        await stack.wait_workflows({"victim"})
        (stack.workflows / "a-nul.yaml").write_bytes(NUL_FILE)
        (stack.workflows / "b-after.yaml").write_text("name: after\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")

        async def reported() -> bool:
            infos = {Path(w.path).name: w for w in await stack.client.list_workflows()}
            nul, after = infos.get("a-nul.yaml"), infos.get("b-after.yaml")
            return (nul is not None and nul.status == "invalid" and nul.error_line == 3
                    and after is not None and after.status == "active")

        try:
            await until(reported, 15, "the NUL file reported and the next file loaded")
        except AssertionError as exc:
            infos = [(Path(w.path).name, w.status, w.error_line, w.error) for w in await stack.client.list_workflows()]
            raise AssertionError(f"{exc}; workflows: {infos}; worker log:\n{worker.log_tail(40)}") from None
        finally:
            assert worker.alive()


async def test_worker_starts_with_a_nul_byte_file_present() -> None:
    async with chaos_stack() as stack:
        (stack.workflows / "a-nul.yaml").write_bytes(NUL_FILE)
        stack.write("hello.yaml", "name: hello\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\n")
        worker = stack.start_worker("boot")
        await stack.wait_ready(worker, timeout=30)
        await stack.wait_workflows({"hello"})
        assert worker.alive()
