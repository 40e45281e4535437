"""Scanning the workflows directory, the registry's reload rules, and the file watcher."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from worker.definitions import (
    Definition,
    Registry,
    is_workflow_file,
    load_text,
    scan_directory,
    watch_directory,
)
from worker.errors import DefinitionError


def workflow(name: str, value: int = 1) -> str:
    return f"name: {name}\nsteps:\n  - id: only\n    uses: set\n    with: {{v: {value}}}\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---- scanning -----------------------------------------------------------------------------------


def test_is_workflow_file_skips_hidden_temporary_and_reserved_files() -> None:
    assert is_workflow_file(Path("refund.yaml"))
    assert is_workflow_file(Path("refund.yml"))
    ignored = (".#refund.yaml", "refund.yaml~", ".refund.yaml.swp", ".hidden.yaml", "tools.yaml", "tools.yml",
               "notes.txt", "refund.yaml.bak", "#refund.yaml#")
    for name in ignored:
        assert not is_workflow_file(Path(name)), name


def test_scan_directory_loads_valid_and_reports_invalid_files(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", workflow("alpha"))
    write(tmp_path / "b.yml", "name: beta\nsteps:\n  - id: x\n    uses: nope\n")
    write(tmp_path / "tools.yaml", "servers: {}\n")
    write(tmp_path / ".#a.yaml", "garbage: [")
    write(tmp_path / "a.yaml~", "garbage: [")
    write(tmp_path / "readme.md", "# hi")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub" / "nested.yaml", workflow("nested"))

    results = scan_directory(tmp_path)

    assert list(results) == [tmp_path / "a.yaml", tmp_path / "b.yml"]
    alpha = results[tmp_path / "a.yaml"]
    assert isinstance(alpha, Definition) and alpha.name == "alpha"
    beta = results[tmp_path / "b.yml"]
    assert isinstance(beta, DefinitionError)
    assert (beta.line, beta.column) == (4, 11)
    assert beta.path == str(tmp_path / "b.yml")


def test_scan_directory_reports_a_symlink_leaving_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "workflows"
    root.mkdir()
    write(tmp_path / "elsewhere.yaml", workflow("elsewhere"))
    (root / "link.yaml").symlink_to(tmp_path / "elsewhere.yaml")
    result = scan_directory(root)[root / "link.yaml"]
    assert isinstance(result, DefinitionError)
    assert result.reason == "symlink points outside the workflows directory"


# ---- registry rules -----------------------------------------------------------------------------


def test_first_load_then_unchanged() -> None:
    registry = Registry()
    path = Path("w/a.yaml")
    first = load_text(workflow("alpha"), path)
    change = registry.apply(path, first)
    assert (change.kind, change.name, change.def_hash) == ("loaded", "alpha", first.def_hash)
    assert change.error is None

    # the same content, reformatted, has the same hash
    same = load_text("# comment\n" + workflow("alpha").replace("{v: 1}", "{ v: 1 }"), path)
    change = registry.apply(path, same)
    assert change.kind == "unchanged"
    assert registry.active()["alpha"] is first

    edited = load_text(workflow("alpha", 2), path)
    change = registry.apply(path, edited)
    assert change.kind == "loaded"
    assert change.def_hash == edited.def_hash != first.def_hash
    assert registry.active()["alpha"] is edited


def test_invalid_file_keeps_the_previous_good_version_active() -> None:
    registry = Registry()
    path = Path("w/a.yaml")
    good = load_text(workflow("alpha"), path)
    registry.apply(path, good)
    error = DefinitionError(path, "YAML syntax error: oops", 3, 1, "  - id")

    change = registry.apply(path, error)

    assert change.kind == "invalid"
    assert change.error is error
    assert (change.name, change.def_hash) == ("alpha", good.def_hash)  # what is still running
    assert registry.active() == {"alpha": good}
    assert registry.errors() == {path: error}

    # fixing the file back to the same content clears the error and says so
    change = registry.apply(path, load_text(workflow("alpha"), path))
    assert change.kind == "loaded"
    assert registry.errors() == {}
    assert registry.active()["alpha"].def_hash == good.def_hash


def test_invalid_new_file_has_nothing_active() -> None:
    registry = Registry()
    path = Path("w/new.yaml")
    change = registry.apply(path, DefinitionError(path, "bad", 1, 1))
    assert (change.kind, change.name, change.def_hash) == ("invalid", None, None)
    assert registry.active() == {}
    assert list(registry.errors()) == [path]


def test_two_files_with_the_same_workflow_name() -> None:
    registry = Registry()
    first, second = Path("w/a.yaml"), Path("w/b.yaml")
    registry.apply(first, load_text(workflow("alpha"), first))

    change = registry.apply(second, load_text(workflow("alpha", 2), second))

    assert change.kind == "invalid"
    assert change.error is not None
    assert change.error.reason == "workflow name 'alpha' is already defined in a.yaml"
    assert change.error.path == str(second)
    assert registry.active()["alpha"].source_path == str(first)
    assert registry.errors()[second].reason == change.error.reason


def test_renaming_a_workflow_releases_the_old_name() -> None:
    registry = Registry()
    path = Path("w/a.yaml")
    registry.apply(path, load_text(workflow("alpha"), path))
    change = registry.apply(path, load_text(workflow("omega"), path))
    assert change.kind == "loaded"
    assert list(registry.active()) == ["omega"]
    # now another file may take the old name
    other = Path("w/b.yaml")
    assert registry.apply(other, load_text(workflow("alpha"), other)).kind == "loaded"


def test_delete_removes_the_workflow_and_its_error() -> None:
    registry = Registry()
    path = Path("w/a.yaml")
    good = load_text(workflow("alpha"), path)
    registry.apply(path, good)
    registry.apply(path, DefinitionError(path, "bad", 1, 1))

    change = registry.remove(path)

    assert (change.kind, change.name, change.def_hash) == ("deleted", "alpha", good.def_hash)
    assert registry.active() == {}
    assert registry.errors() == {}
    assert registry.get("alpha") is None
    # the name is free again
    other = Path("w/b.yaml")
    assert registry.apply(other, load_text(workflow("alpha"), other)).kind == "loaded"


def test_sync_applies_a_scan_and_removes_vanished_files(tmp_path: Path) -> None:
    registry = Registry()
    write(tmp_path / "a.yaml", workflow("alpha"))
    write(tmp_path / "b.yaml", workflow("beta"))
    changes = registry.sync(scan_directory(tmp_path))
    assert sorted((c.path.name, c.kind) for c in changes) == [("a.yaml", "loaded"), ("b.yaml", "loaded")]

    (tmp_path / "b.yaml").unlink()
    write(tmp_path / "a.yaml", "name: alpha\nsteps: [\n")
    changes = registry.sync(scan_directory(tmp_path))
    assert sorted((c.path.name, c.kind) for c in changes) == [("a.yaml", "invalid"), ("b.yaml", "deleted")]
    assert list(registry.active()) == ["alpha"]


# ---- watcher ------------------------------------------------------------------------------------


async def test_watcher_reports_a_saved_file_within_one_second(tmp_path: Path) -> None:
    stop = asyncio.Event()
    watcher = watch_directory(tmp_path, stop_event=stop)
    pending = asyncio.ensure_future(anext(watcher))
    await asyncio.sleep(0.3)  # let the watcher thread start
    await asyncio.to_thread(write, tmp_path / "ignored.txt", "x")
    await asyncio.to_thread(write, tmp_path / ".x.yaml.swp", "x")
    await asyncio.to_thread(write, tmp_path / "tools.yaml", "servers: {}\n")

    written_at = time.monotonic()
    await asyncio.to_thread(write, tmp_path / "refund.yaml", workflow("refund"))
    seen: set[tuple[str, Path]] = set()
    while (tmp_path / "refund.yaml") not in {path for _, path in seen}:
        seen |= await asyncio.wait_for(pending, timeout=max(0.01, 1.0 - (time.monotonic() - written_at)))
        pending = asyncio.ensure_future(anext(watcher))
    elapsed = time.monotonic() - written_at

    assert elapsed < 1.0
    # the shared tools file is watched too (its validation status is reloaded); the others are ignored
    assert {path for _, path in seen} == {tmp_path / "tools.yaml", tmp_path / "refund.yaml"}
    assert {kind for kind, _ in seen} <= {"added", "modified"}

    # a later delete arrives too
    await asyncio.sleep(0.1)
    await asyncio.to_thread((tmp_path / "refund.yaml").unlink)
    batch = await asyncio.wait_for(pending, timeout=1.0)
    assert ("deleted", tmp_path / "refund.yaml") in batch

    stop.set()
    rest = await asyncio.wait_for(_drain(watcher), timeout=1.0)
    assert rest == []


async def _drain(watcher: AsyncIterator[set[tuple[str, Path]]]) -> list[set[tuple[str, Path]]]:
    return [batch async for batch in watcher]


async def test_watcher_stops_when_the_stop_event_is_set(tmp_path: Path) -> None:
    stop = asyncio.Event()
    task = asyncio.ensure_future(_drain(watch_directory(tmp_path, stop_event=stop)))
    await asyncio.sleep(0.2)
    stop.set()
    assert await asyncio.wait_for(task, timeout=1.0) == []
