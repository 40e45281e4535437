"""Definitions for llm/tool/agent steps: workflow `tools:` and `pricing:`, the shared tools.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from worker.definitions import load_text, scan_directory
from worker.definitions.loader import load_tools_text
from worker.errors import DefinitionError

WF = """
name: x
tools:
  helpdesk: {command: python, args: [mcp_servers/helpdesk.py]}
pricing: {m: {input: 1, output: 2}}
steps:
  - id: a
    uses: agent
    with: {model: m, prompt: hi, servers: [helpdesk, shared_one], approve_tools: [refund]}
  - id: t
    uses: tool
    with: {server: helpdesk, tool: get_ticket, arguments: {id: "${{ steps.a.output.answer }}"}}
  - id: l
    uses: llm
    with: {model: m, prompt: "${{ steps.a.output.answer }}", schema: {type: object}}
"""


def test_named_servers_and_prices_are_copied_into_the_steps() -> None:
    defn = load_text(WF)
    agent, tool, llm = (defn.step(s).with_ for s in ("a", "t", "l"))
    assert agent["servers"] == [{"command": "python", "args": ["mcp_servers/helpdesk.py"], "name": "helpdesk"},
                                "shared_one"]
    assert tool["server"]["name"] == "helpdesk"
    assert agent["pricing"] == llm["pricing"] == {"m": {"input": 1, "output": 2}}
    assert "pricing" not in tool


def test_the_copy_is_stable_through_storage() -> None:
    from worker.definitions.model import Definition

    defn = load_text(WF)
    again = Definition.from_json(defn.to_json())
    assert again.def_hash == defn.def_hash


def test_changing_a_server_declaration_changes_the_version() -> None:
    other = load_text(WF.replace("helpdesk.py", "helpdesk2.py"))
    assert other.def_hash != load_text(WF).def_hash


@pytest.mark.parametrize(("text", "where", "reason"), [
    ("name: x\nsteps:\n  - id: a\n    uses: llm\n    with: {model: m, temprature: 1, prompt: x}\n",
     (5, 22), "unknown key 'temprature'"),
    ("name: x\nsteps:\n  - id: a\n    uses: llm\n    with: {model: m}\n", (5, 11), "give a prompt or messages"),
    ("name: x\ntools:\n  h: {command: a, url: http://x}\nsteps:\n  - {id: a, uses: tool, with: {server: h, tool: t}}\n",
     (3, 6), "exactly one of command"),
    ("name: x\nsteps:\n  - id: a\n    uses: agent\n    with: {model: m, prompt: x, max_turns: 0}\n",
     (5, 44), "greater than or equal to 1"),
])
def test_invalid_arguments_are_located(text: str, where: tuple[int, int], reason: str) -> None:
    with pytest.raises(DefinitionError) as info:
        load_text(text, "wf.yaml")
    assert reason in info.value.reason
    assert (info.value.line, info.value.column) == where


def test_tools_file_errors_are_located_and_listed(tmp_path: Path) -> None:
    spec = load_tools_text("servers:\n  a: {command: python}\npricing: {m: {input: 1, output: 3}}\n")
    assert spec.servers["a"].command == "python" and spec.pricing["m"].output == 3
    (tmp_path / "tools.yaml").write_text("servers:\n  a:\n    comand: x\n")
    (tmp_path / "w.yaml").write_text("name: w\nsteps:\n  - {id: a, uses: set}\n")
    results = scan_directory(tmp_path)
    error = results[tmp_path / "tools.yaml"]
    assert isinstance(error, DefinitionError) and (error.line, error.column) == (3, 5)
    assert "unknown key 'comand'" in error.reason
    assert results[tmp_path / "w.yaml"].name == "w"  # type: ignore[union-attr]
