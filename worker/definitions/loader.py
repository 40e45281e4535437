"""YAML workflow files -> `Definition`, with every failure located at a line and column.

Only plain YAML data is accepted: mappings with string keys, lists, strings, numbers, booleans and
null. Events come from libyaml when PyYAML has it, else from PyYAML's pure-Python parser; either
way SafeLoader's composer builds the node tree (with the guards below) and scalars get SafeLoader's
types, except timestamps, which stay the text written. No constructor ever runs a tag.

Refused: anchors and aliases (how "billion laughs" alias bombs work), merge keys, duplicate keys,
non-string keys and non-standard tags such as `!!python/object`. Files are capped at 1 MiB and
nesting at `MAX_DEPTH`, so loading is bounded in time and memory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

from worker.definitions.model import Definition, Loc, Problem, find_problems, problems_from_validation
from worker.definitions.schema import ToolsFileSpec, WorkflowSpec
from worker.definitions.trust import TrustCheck, trust_problems
from worker.errors import DefinitionError

MAX_FILE_BYTES = 1024 * 1024
"""Files larger than this are refused before parsing."""
MAX_DEPTH = 64
"""Deepest accepted nesting of mappings and lists."""
_M = TypeVar("_M", bound=BaseModel)

_YAML = "tag:yaml.org,2002:"
_STR, _MAP, _SEQ, _MERGE, _TIMESTAMP = (_YAML + t for t in ("str", "map", "seq", "merge", "timestamp"))
_TYPED_SCALARS = {_YAML + t: t for t in ("null", "bool", "int", "float")}
_PLAIN_DATA = "only plain data (mappings, lists, strings, numbers, booleans, null) is accepted"


class _RefusalError(Exception):
    """A located reason to refuse the document, raised while composing or converting it."""

    def __init__(self, reason: str, mark: yaml.Mark | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.mark = mark


class _Guard:
    """Composer hook refusing anchors, aliases and deep nesting as nodes are built."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: object) -> Node | None:
        event = self.peek_event()  # type: ignore[attr-defined]  # from the parser class
        if isinstance(event, yaml.AliasEvent):
            raise _RefusalError(f"YAML aliases are not allowed (found *{event.anchor})", event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            reason = f"YAML aliases are not allowed, nor anchors (found &{anchor})"
            raise _RefusalError(reason, event.start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                reason = f"the document is nested more than {MAX_DEPTH} levels deep"
                raise _RefusalError(reason, event.start_mark)
            node: Node | None = super().compose_node(parent, index)  # type: ignore[misc]
            return node
        finally:
            self._depth -= 1


class _PythonComposer(_Guard, yaml.SafeLoader):
    """The pure-Python SafeLoader parser and composer, guarded."""

    events_in_bytes = False


try:
    from yaml.cyaml import CParser
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _FastComposer: type[_Guard] | None = None
else:

    class _LibyamlComposer(_Guard, Composer, CParser, Resolver):  # type: ignore[misc]
        """libyaml's scanner and parser (about 5x faster) feeding the guarded Python composer."""

        events_in_bytes = True  # libyaml reports reader errors at byte offsets

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            Resolver.__init__(self)

    _FastComposer = _LibyamlComposer


def _tag_refusal(node: Node) -> _RefusalError:
    tag = node.tag
    shown = "!!" + tag.removeprefix(_YAML) if tag.startswith(_YAML) else tag
    return _RefusalError(f"YAML tag '{shown}' is not allowed: {_PLAIN_DATA}", node.start_mark)


class _Converter:
    """Composed nodes -> plain Python data, refusing anything that is not plain data."""

    def __init__(self) -> None:
        self._constructor = SafeConstructor()

    def convert(self, node: Node) -> object:
        if isinstance(node, MappingNode):
            return self._mapping(node)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                raise _tag_refusal(node)
            return [self.convert(item) for item in node.value]
        assert isinstance(node, ScalarNode)
        if node.tag in (_STR, _TIMESTAMP):
            return node.value
        kind = _TYPED_SCALARS.get(node.tag)
        if kind is None:
            raise _tag_refusal(node)
        try:
            return self._constructor.construct_object(node)
        except (ValueError, OverflowError) as exc:
            raise _RefusalError(f"invalid {kind} {node.value!r}: {exc}", node.start_mark) from None

    def _mapping(self, node: MappingNode) -> dict[str, object]:
        if node.tag != _MAP:
            raise _tag_refusal(node)
        result: dict[str, object] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                raise _RefusalError("YAML merge keys (<<) are not allowed", key_node.start_mark)
            if isinstance(key_node, ScalarNode) and key_node.tag == _YAML + "bool" and key_node.value == "on" \
                    and not key_node.style:
                key_node = ScalarNode(_STR, "on", key_node.start_mark, key_node.end_mark)  # `on:` (triggers)
            if not isinstance(key_node, ScalarNode) or key_node.tag != _STR:
                shown = key_node.value if isinstance(key_node, ScalarNode) else "a collection"
                reason = f"mapping keys must be strings: quote {shown!r} if it is meant as text"
                raise _RefusalError(reason, key_node.start_mark)
            key = key_node.value
            if key in first_line:
                reason = f"duplicate key '{key}' (first on line {first_line[key]})"
                raise _RefusalError(reason, key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
            result[key] = self.convert(value_node)
        return result


def _excerpt(text: str, line_index: int) -> str | None:
    lines = text.splitlines()
    return lines[line_index] if 0 <= line_index < len(lines) else None


def _error_at(path: str, text: str, reason: str, mark: yaml.Mark | None) -> DefinitionError:
    if mark is None:
        return DefinitionError(path, reason)
    return DefinitionError(path, reason, mark.line + 1, mark.column + 1, _excerpt(text, mark.line))


def _error_at_offset(path: str, text: str, reason: str, offset: int) -> DefinitionError:
    line_start = text.rfind("\n", 0, offset) + 1
    line_index = text.count("\n", 0, offset)
    return DefinitionError(path, reason, line_index + 1, offset - line_start + 1, _excerpt(text, line_index))


def _reader_error(path: str, text: str, exc: yaml.reader.ReaderError, in_bytes: bool) -> DefinitionError:
    offset = exc.position
    if in_bytes:
        offset = len(text.encode("utf-8", "surrogatepass")[:offset].decode("utf-8", "ignore"))
    reason = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    return _error_at_offset(path, text, reason, offset)


def _compose(text: str, path: str) -> Node | None:
    composer_class = _FastComposer or _PythonComposer
    in_bytes = bool(getattr(composer_class, "events_in_bytes", False))
    try:
        loader: Any = composer_class(text)  # type: ignore[call-arg]  # libyaml or pure-python composer
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc, in_bytes) from None
    try:
        node: Node | None = loader.get_single_node()
        return node
    except _RefusalError as refusal:
        raise _error_at(path, text, refusal.reason, refusal.mark) from None
    except yaml.MarkedYAMLError as exc:
        reason = f"YAML syntax error: {exc.problem or 'invalid document'}"
        if exc.context:
            reason += f" ({exc.context})"
        raise _error_at(path, text, reason, exc.problem_mark or exc.context_mark) from None
    except yaml.reader.ReaderError as exc:
        raise _reader_error(path, text, exc, in_bytes) from None
    except yaml.YAMLError as exc:
        raise DefinitionError(path, f"YAML error: {exc}") from None
    finally:
        loader.dispose()


def _locate(root: Node, loc: Loc, at_key: bool) -> Node:
    """The deepest node on `loc` (a mapping key instead of its value when `at_key`)."""
    node = root
    for position, part in enumerate(loc):
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if key_node.value == part:
                    if at_key and position == len(loc) - 1:
                        return key_node  # type: ignore[no-any-return]
                    node = value_node
                    break
            else:
                return node
        elif isinstance(node, SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _first_problem(path: str, text: str, root: Node, problems: Sequence[Problem]) -> DefinitionError:
    """The problem earliest in the file, as a located DefinitionError.

    A missing key is reported only when nothing else is wrong: it is usually the consequence of
    a misspelt key, and "unknown key 'neds'" is the more useful message.
    """
    located = [(_locate(root, p.loc, p.at_key).start_mark, p) for p in problems]
    mark, problem = min(located, key=lambda item: (item[1].missing, item[0].line, item[0].column))
    return _error_at(path, text, problem.reason, mark)


def load_text(text: str, path: str | Path = "<string>", checks: Sequence[TrustCheck] = ()) -> Definition:
    """Parse and validate one workflow document; raise DefinitionError on any problem.

    `checks` are the deployment's trust checks (`worker.boundary.load_checks`): what the operator allows
    a workflow file to reach. They run after the file's own rules and are located the same way.
    """
    where = str(path)
    if len(text) > MAX_FILE_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise DefinitionError(where, f"the file is larger than {MAX_FILE_BYTES} bytes (1 MiB)", 1)
    root = _compose(text, where)
    if root is None:
        raise DefinitionError(where, "the file is empty: expected a mapping with name and steps", 1, 1,
                              _excerpt(text, 0))
    try:
        data = _Converter().convert(root)
    except _RefusalError as refusal:
        raise _error_at(where, text, refusal.reason, refusal.mark) from None
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single value"
        raise _error_at(where, text, f"the top level must be a mapping with name and steps, not {kind}",
                        root.start_mark)
    try:
        spec = WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, WorkflowSpec, data)
        if not problems:  # pragma: no cover - pydantic always reports at least one error
            raise DefinitionError(where, str(exc)) from None
        raise _first_problem(where, text, root, problems) from None
    problems = find_problems(spec) or trust_problems(spec, checks)
    if problems:
        raise _first_problem(where, text, root, problems)
    pseudo_path = where.startswith("<") and where.endswith(">")  # "<string>", "<bytes>"
    return Definition.build(spec, None if pseudo_path else where)


def load_bytes(data: bytes, path: str | Path = "<bytes>", checks: Sequence[TrustCheck] = ()) -> Definition:
    """Decode UTF-8 (reporting the line of an invalid byte) and load the document."""
    where = str(path)
    if len(data) > MAX_FILE_BYTES:
        raise DefinitionError(where, f"the file is larger than {MAX_FILE_BYTES} bytes (1 MiB)", 1)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        line_end = data.find(b"\n", exc.start)
        line = data[line_start:line_end if line_end != -1 else len(data)]
        column = len(data[line_start:exc.start].decode("utf-8", "replace")) + 1
        reason = f"the file is not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})"
        raise DefinitionError(where, reason, data.count(b"\n", 0, exc.start) + 1, column,
                              line.decode("utf-8", "replace").rstrip("\r")) from None
    return load_text(text, where, checks)


def _check_inside(path: Path, root: Path) -> Path:
    """Resolve `path` (following symlinks) and refuse it if it leaves `root`."""
    where = str(path)
    try:
        real = path.resolve(strict=True)
        real_root = root.resolve(strict=True)
    except FileNotFoundError:
        raise DefinitionError(where, "file not found (or a broken symlink)", 1) from None
    except (OSError, RuntimeError) as exc:
        raise DefinitionError(where, f"cannot resolve the path: {exc}", 1) from None
    if not real.is_relative_to(real_root):
        lexically_inside = Path(os.path.abspath(path)).is_relative_to(Path(os.path.abspath(root)))
        reason = ("symlink points outside the workflows directory" if lexically_inside
                  else "file is outside the workflows directory")
        raise DefinitionError(where, reason, 1)
    return real


def _read_regular_file(real: Path, where: str) -> bytes:
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)  # O_NONBLOCK: opening a FIFO must not wait for a writer
    except FileNotFoundError:
        raise DefinitionError(where, "file not found", 1) from None
    except OSError as exc:
        raise DefinitionError(where, f"cannot open the file: {exc.strerror or exc}", 1) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DefinitionError(where, "not a regular file", 1)
        if info.st_size > MAX_FILE_BYTES:
            raise DefinitionError(where, f"the file is larger than {MAX_FILE_BYTES} bytes (1 MiB)", 1)
        chunks: list[bytes] = []
        remaining = MAX_FILE_BYTES + 1
        while remaining > 0 and (chunk := os.read(fd, min(remaining, 65536))):
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise DefinitionError(where, f"cannot read the file: {exc.strerror or exc}", 1) from None
    finally:
        os.close(fd)


def load_file(path: Path, root: Path | None = None, checks: Sequence[TrustCheck] = ()) -> Definition:
    """Load a workflow file; with `root`, refuse paths that resolve outside it.

    Only regular files are read (a FIFO or device is refused without blocking).
    """
    path = Path(path)
    where = str(path)
    real = _check_inside(path, root) if root is not None else path
    return load_bytes(_read_regular_file(real, where), where, checks)


def load_operator_text(text: str, path: str | Path, model: type[_M], holds: str) -> _M:
    """Parse and validate an operator file (`tools.yaml`, `limits.yaml`) against `model`; DefinitionError with
    line:column. An empty file is the model's defaults; `holds` names what the top-level mapping holds."""
    where = str(path)
    if len(text.encode("utf-8", "surrogatepass")) > MAX_FILE_BYTES:
        raise DefinitionError(where, f"the file is larger than {MAX_FILE_BYTES} bytes (1 MiB)", 1)
    root = _compose(text, where)
    if root is None:
        return model()
    try:
        data = _Converter().convert(root)
    except _RefusalError as refusal:
        raise _error_at(where, text, refusal.reason, refusal.mark) from None
    if not isinstance(data, dict):
        raise _error_at(where, text, f"the top level must be a mapping with {holds}", root.start_mark)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, model, data)
        if not problems:  # pragma: no cover
            raise DefinitionError(where, str(exc)) from None
        raise _first_problem(where, text, root, problems) from None


def read_operator_file(path: Path) -> str:
    """The text of an operator file (a regular file of at most 1 MiB, UTF-8)."""
    data = _read_regular_file(Path(path), str(path))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise DefinitionError(str(path), "the file is not valid UTF-8") from None


def load_tools_text(text: str, path: str | Path = "<tools>") -> ToolsFileSpec:
    """Parse and validate a shared `tools.yaml` (MCP servers, prices); DefinitionError with line:column."""
    return load_operator_text(text, path, ToolsFileSpec, "servers:")


def load_tools_file(path: Path) -> ToolsFileSpec:
    """Load `tools.yaml` (a regular file of at most 1 MiB)."""
    return load_tools_text(read_operator_file(path), path)
