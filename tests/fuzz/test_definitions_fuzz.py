"""Property tests of the workflow loader: whatever the text, `load_text` either returns a Definition or
raises DefinitionError (never another exception), and does so quickly (hypothesis deadlines)."""

from __future__ import annotations

import contextlib
import string
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from worker.definitions.loader import load_bytes, load_text
from worker.definitions.model import Definition
from worker.errors import DefinitionError

FUZZ = settings(database=None, max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _load(text: str) -> Definition | None:
    try:
        return load_text(text, "fuzz.yaml")
    except DefinitionError as exc:
        assert exc.reason, "a DefinitionError must say why"
        return None


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    _load(text)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(DefinitionError):
        load_bytes(data, "fuzz.yaml")


YAML_TOKENS = [
    "name:", "steps:", "inputs:", "output:", "description:", " id:", " uses:", " with:", " needs:", " when:",
    " retry:", " timeout:", " foreach:", " continue_on_error:", " idempotent:", " secrets:", "max_attempts:",
    "http", "set", "sleep", "python", "approval", "workflow", "llm", "tool", "agent", "shell",
    "a", "b", "c", "x", "-", "- ", "  ", "    ", "\n", "\t", ":", ",", "{", "}", "[", "]", "'", '"', "#", "&a", "*a",
    "<<:", "!!python/object/apply:os.system", "!!str", "!!binary", "!custom", "---", "...", "|", ">", "?",
    "${{", "}}", "inputs.x", "steps.a.output", "__class__", "1s", "500ms", "-1", "1e309", "0x10", "null",
    "true", "~", "%YAML 1.1", "\\u0000", "\x00", "\x85", "\ufeff", "é", "💥",
]


@FUZZ
@given(st.lists(st.sampled_from(YAML_TOKENS), max_size=60))
def test_yaml_token_soup(tokens: list[str]) -> None:
    _load(" ".join(tokens))


_KEY = st.sampled_from(["name", "steps", "inputs", "output", "description", "id", "uses", "with", "needs",
                        "when", "retry", "timeout", "foreach", "continue_on_error", "idempotent", "secrets",
                        "max_attempts", "initial_interval", "backoff", "url", "method", "json", "duration",
                        "function", "bogus"])
_SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
    st.sampled_from(["http", "set", "sleep", "python", "approval", "workflow", "a", "b", "1s", "abc",
                     "${{ inputs.x }}", "${{ steps.a.output }}", "${{ 1/0 }}", "${{ x.__class__ }}",
                     "${{ [1] * 10**9 }}", "${{", "}}", "http://127.0.0.1/x", "30s", "-5s"]),
    st.text(max_size=20),
)
_VALUE = st.recursive(_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_KEY, inner, max_size=5)), max_leaves=25)


def _step(draw_id: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"id": st.sampled_from(["a", "b", "c", draw_id])},
        optional={"uses": st.sampled_from(["http", "set", "sleep", "python", "approval", "workflow", "nope"]),
                  "with": _VALUE, "needs": st.lists(st.sampled_from(["a", "b", "c", "z"]), max_size=3),
                  "when": _SCALAR, "retry": _VALUE, "timeout": _SCALAR, "foreach": _SCALAR,
                  "bogus": _SCALAR},
    )


_DOC = st.fixed_dictionaries(
    {"name": st.one_of(st.sampled_from(["wf", "a b", "", "x" * 300]), _SCALAR),
     "steps": st.one_of(st.lists(_step("d"), max_size=5), _VALUE)},
    optional={"inputs": _VALUE, "output": _VALUE, "description": _SCALAR, "extra": _SCALAR},
)


@FUZZ
@given(_DOC)
def test_structured_documents(doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    defn = _load(text)
    if defn is not None:
        assert defn.name == doc["name"]
        assert set(defn.order) == {s["id"] for s in doc["steps"]}


@settings(database=None, max_examples=40, deadline=5000)
@given(st.integers(1, 200), st.sampled_from(["[", "{", "- ", "a: "]))
def test_deep_nesting_is_refused_quickly(depth: int, opener: str) -> None:
    closer = {"[": "]", "{": "}", "- ": "", "a: ": ""}[opener]
    if opener in ("- ", "a: "):
        body = "".join("  " * i + opener + "\n" for i in range(depth)) + "  " * depth + "x\n"
    else:
        body = opener * depth + closer * depth + "\n"
    _load("name: deep\nsteps:\n  - {id: a, uses: set, with: {x: 1}}\nx:\n" + body)


@settings(database=None, max_examples=20, deadline=10_000)
@given(st.integers(2, 9), st.integers(2, 9))
def test_alias_bombs_are_refused(width: int, levels: int) -> None:
    lines = ["name: bomb", f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    lines.append(f"steps: [{{id: a, uses: set, with: {{x: *l{levels - 1}}}}}]")
    assert _load("\n".join(lines)) is None


@settings(database=None, max_examples=50, deadline=3000)
@given(st.text(alphabet=string.printable, min_size=1, max_size=60))
def test_python_tags_never_construct(payload: str) -> None:
    for tag in ("!!python/object/apply:os.system", "!!python/name:os.system", "!!python/object:object",
                "!!python/module:os", "!!binary", "!!set"):
        text = f"name: {tag} {payload!r}\nsteps: [{{id: a, uses: set, with: {{x: 1}}}}]\n"
        assert _load(text) is None
