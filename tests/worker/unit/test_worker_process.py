"""The worker process's runtime settings: `AGENTRT_GC_THRESHOLDS` (its collector) and `AGENTRT_EVENT_LOOP`."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from worker.cli.local import GC_THRESHOLDS, tune_gc


@pytest.fixture(autouse=True)
def _restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_default_thresholds_and_frozen_start_up_objects() -> None:
    gc.unfreeze()
    tune_gc("")
    assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_freeze_count() > 0


def test_explicit_thresholds() -> None:
    tune_gc(" 5000, 10 ,10")
    assert gc.get_threshold() == (5000, 10, 10)


def test_python_keeps_the_interpreter_defaults() -> None:
    gc.set_threshold(700, 10, 10)
    gc.unfreeze()
    tune_gc("python")
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("bad", ["fast", "1,2", "1,2,x"])
def test_a_bad_value_stops_with_a_message(bad: str) -> None:
    with pytest.raises(SystemExit, match="AGENTRT_GC_THRESHOLDS: expected"):
        tune_gc(bad)


def test_the_worker_runs_on_uvloop_unless_told_otherwise() -> None:
    import asyncio

    import uvloop

    from worker.loops import event_loop_factory

    assert event_loop_factory("") is uvloop.new_event_loop
    assert event_loop_factory("UVLOOP") is uvloop.new_event_loop
    assert event_loop_factory("asyncio") is None  # asyncio.Runner's default loop
    with pytest.raises(SystemExit, match="AGENTRT_EVENT_LOOP: expected"):
        event_loop_factory("trio")
    with asyncio.Runner(loop_factory=event_loop_factory("")) as runner:
        assert isinstance(runner.get_loop(), uvloop.Loop)
