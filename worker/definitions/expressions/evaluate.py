"""Evaluation: simpleeval with strict data-only semantics, every evaluation within its budget."""

from __future__ import annotations

import ast
import threading
from collections.abc import Mapping

from simpleeval import EvalWithCompoundTypes

from worker.definitions.expressions.compile import OPEN, Compiled, Template, compile_expression, compile_template
from worker.definitions.expressions.functions import FUNCTIONS
from worker.definitions.expressions.limits import MAX_TEXT_LENGTH, Budget, LimitError, charge, current
from worker.definitions.expressions.operators import OPERATORS
from worker.definitions.expressions.sizes import to_text, type_name
from worker.errors import ExpressionError

_SMALL = 256  # interpolated texts shorter than this are not counted


def _keys_hint(mapping: Mapping[object, object]) -> str:
    keys = [str(key) for key in list(mapping)[:12]]
    if not keys:
        return " (it is empty)"
    more = ", ..." if len(mapping) > len(keys) else ""
    return f" (keys: {', '.join(keys)}{more})"


class _Evaluator(EvalWithCompoundTypes):  # type: ignore[misc]
    """simpleeval with strict, data-only name, attribute and subscript semantics.

    Trees reaching it have passed `_check_node`, so only whitelisted node types occur and calls
    always name an entry of FUNCTIONS. One instance per thread.
    """

    def __init__(self) -> None:
        super().__init__(operators=dict(OPERATORS), functions=dict(FUNCTIONS), names={})
        self.budget: Budget = current()

    def run(self, compiled: Compiled, context: Mapping[str, object]) -> object:
        self.names = context
        self.expr = compiled.source
        try:
            return self._eval(compiled.node)
        except ExpressionError:
            raise
        except LimitError as exc:
            raise ExpressionError(compiled.source, str(exc)) from None
        except RecursionError:
            raise ExpressionError(compiled.source, "value is nested too deeply") from None
        except ZeroDivisionError:
            raise ExpressionError(compiled.source, "division by zero") from None
        except OverflowError:
            raise ExpressionError(compiled.source, "the number is too large to represent") from None
        except MemoryError:
            raise ExpressionError(compiled.source, "out of memory") from None
        except Exception as exc:  # any library or type error becomes an ExpressionError
            reason = str(exc) or type(exc).__name__
            raise ExpressionError(compiled.source, reason) from exc
        finally:
            self.names = {}

    def _eval(self, node: ast.AST) -> object:
        return self.nodes[type(node)](node)

    def _fail(self, reason: str) -> ExpressionError:
        return ExpressionError(self.expr, reason)

    def _eval_name(self, node: ast.Name) -> object:
        try:
            return self.names[node.id]
        except KeyError:
            available = ", ".join(sorted(self.names)) or "none"
            raise self._fail(f"unknown name '{node.id}' (available here: {available})") from None

    def _read_key(self, container: object, key: object, base: ast.expr) -> object:
        if isinstance(container, Mapping):
            try:
                return container[key]
            except KeyError:
                where = ast.unparse(base)  # only on failure: this is the hot path
                raise self._fail(f"{where} has no key {key!r}{_keys_hint(container)}") from None
        where = ast.unparse(base)
        if container is None:
            raise self._fail(f"cannot read {key!r}: {where} is null")
        raise self._fail(f"cannot read {key!r}: {where} is {type_name(container)}, not a mapping")

    def _eval_attribute(self, node: ast.Attribute) -> object:
        return self._read_key(self._eval(node.value), node.attr, node.value)

    def _eval_subscript(self, node: ast.Subscript) -> object:
        container = self._eval(node.value)
        key = self._eval(node.slice)
        if isinstance(container, list | tuple | str) and not isinstance(container, Mapping):
            if isinstance(key, slice):
                self.budget.charge(len(range(*key.indices(len(container)))), "a slice")
                return container[key]
            if isinstance(key, bool) or not isinstance(key, int):
                raise self._fail(f"{ast.unparse(node.value)} is a list or string: index it with an integer")
            if not -len(container) <= key < len(container):
                raise self._fail(
                    f"index {key} is out of range for {ast.unparse(node.value)} (length {len(container)})"
                )
            return container[key]
        return self._read_key(container, key, node.value)

    def _eval_call(self, node: ast.Call) -> object:
        assert isinstance(node.func, ast.Name)  # guaranteed by _check_node
        func = self.functions[node.func.id]
        args = [self._eval(arg) for arg in node.args]
        kwargs = {str(kw.arg): self._eval(kw.value) for kw in node.keywords}  # **spread is refused earlier
        return func(*args, **kwargs)

    # literals: their length is bounded by the source, but what they hold counts towards the budget
    def _eval_list(self, node: ast.List) -> object:
        self.budget.charge(len(node.elts), "a list literal")
        return [self._eval(item) for item in node.elts]

    def _eval_tuple(self, node: ast.Tuple) -> object:
        self.budget.charge(len(node.elts), "a tuple literal")
        return tuple(self._eval(item) for item in node.elts)

    def _eval_dict(self, node: ast.Dict) -> object:
        self.budget.charge(len(node.keys), "a mapping literal")
        return {self._eval(key): self._eval(value)  # type: ignore[arg-type]  # None keys are refused earlier
                for key, value in zip(node.keys, node.values, strict=True)}


_local = threading.local()


def _evaluator() -> _Evaluator:
    try:
        return _local.evaluator  # type: ignore[no-any-return]
    except AttributeError:
        evaluator = _local.evaluator = _Evaluator()
        return evaluator


def _interpolate(template: Template, context: Mapping[str, object], evaluator: _Evaluator) -> str:
    pieces: list[str] = []
    length = 0
    for part in template.parts:
        if isinstance(part, str):
            piece = part
        else:
            value = evaluator.run(part, context)
            try:
                piece = to_text(value, cap=MAX_TEXT_LENGTH - length)
            except LimitError as exc:
                raise ExpressionError(part.source, str(exc)) from None
            except (TypeError, ValueError, RecursionError) as exc:
                raise ExpressionError(part.source, f"cannot convert the value to text: {exc}") from None
        length += len(piece)
        if length > MAX_TEXT_LENGTH:
            raise ExpressionError(template.source[:200], f"the rendered string would be longer than "
                                                         f"{MAX_TEXT_LENGTH} characters")
        pieces.append(piece)
    if length >= _SMALL:  # short texts are bounded by the definition's size
        try:
            charge(length, "interpolation")
        except LimitError as exc:
            raise ExpressionError(template.source[:200], str(exc)) from None
    return "".join(pieces)


def _render(value: object, context: Mapping[str, object], evaluator: _Evaluator) -> object:
    if isinstance(value, str):
        if OPEN not in value:
            return value
        template = compile_template(value)
        if template.single is not None:
            result = evaluator.run(template.single, context)
            return list(result) if isinstance(result, tuple) else result
        return _interpolate(template, context, evaluator)
    if isinstance(value, Mapping):
        return {key: _render(item, context, evaluator) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_render(item, context, evaluator) for item in value]
    return value


def evaluate(expr: str, context: Mapping[str, object]) -> object:
    """Evaluate one expression (without the `${{ }}` markers) against `context`, within one budget.

    Values read from the context are returned as they are (not copied): treat them as read-only.
    """
    evaluator = _evaluator()
    budget = evaluator.budget
    outer = budget.active
    if not outer:
        budget.reset()
    try:
        return evaluator.run(compile_expression(expr), context)
    finally:
        budget.active = outer


def render(value: object, context: Mapping[str, object]) -> object:
    """Render every template inside a nested JSON-like value, within one budget; the input is never modified.

    Mappings and lists are rebuilt (tuples become lists); values taken from the context are
    inserted as they are and never rendered again.
    """
    if isinstance(value, str) and OPEN not in value:
        return value
    evaluator = _evaluator()
    budget = evaluator.budget
    outer = budget.active
    if not outer:
        budget.reset()
    try:
        return _render(value, context, evaluator)
    except RecursionError:
        raise ExpressionError("", "the value to render is nested too deeply") from None
    finally:
        budget.active = outer


def truthy(value: object) -> bool:
    """Python truthiness, nothing more: the strings "false" and "0" are true, "" is false.

    A `when:` that should test a string must compare it, e.g. `${{ inputs.flag == 'yes' }}`.
    """
    return bool(value)

