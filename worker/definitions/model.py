"""The compiled workflow definition the engine uses, and the checks a spec must pass to become one.

`find_problems` holds every rule that pydantic cannot express (step references, cycles, `with:`
arguments, expressions, secrets). It reports each problem with a location path such as
`("steps", 2, "with", "url")`; the YAML loader turns that path into a line and column, and
`Definition.from_json` reports it as text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from worker.definitions.expressions import (
    OPEN,
    RootRead,
    check_template,
    has_heavy_expressions,
    root_reads,
    single_expression,
)
from worker.definitions.flow import concurrency_problems
from worker.definitions.problems import (
    CONTEXT_ROOTS,
    FOREACH_ROOTS,
    Loc,
    Problem,
    format_loc,
    problems_from_validation,
)
from worker.definitions.schema import (
    AVAILABLE_KINDS,
    DEFAULT_RETRY,
    SECRET_KINDS,
    RetryPolicy,
    StepSpec,
    WorkflowSpec,
)
from worker.definitions.step_args import ARGS_MODELS
from worker.definitions.triggers import trigger_problems
from worker.errors import DefinitionError, ExpressionError, NotFound


def resolve_needs(spec: WorkflowSpec) -> dict[str, tuple[str, ...]]:
    """Explicit `needs`, or else the previous step in file order (the first step needs nothing)."""
    needs: dict[str, tuple[str, ...]] = {}
    previous: str | None = None
    for step in spec.steps:
        if step.needs is not None:
            needs[step.id] = tuple(step.needs)
        else:
            needs[step.id] = (previous,) if previous is not None else ()
        previous = step.id
    return needs


def _find_cycle(order: Sequence[str], needs: Mapping[str, Sequence[str]]) -> list[str] | None:
    """A dependency cycle (first step repeated at the end), rotated to start earliest in the file."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    for start in order:
        if start in state:
            continue
        path: list[str] = [start]
        pending: list[Iterator[str]] = [iter(needs.get(start, ()))]
        state[start] = 1
        while pending:
            following = next(pending[-1], None)
            if following is None:
                state[path.pop()] = 2
                pending.pop()
            elif state.get(following) == 1:
                cycle = path[path.index(following):]
                positions = [order.index(step_id) for step_id in cycle]
                first = positions.index(min(positions))
                cycle = cycle[first:] + cycle[:first]
                return [*cycle, cycle[0]]
            elif following not in state:
                state[following] = 1
                path.append(following)
                pending.append(iter(needs.get(following, ())))
    return None


def compute_ancestors(order: Sequence[str], needs: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """Every step each step depends on, directly or transitively (the graph must be acyclic)."""
    ancestors: dict[str, frozenset[str]] = {}

    def of(step_id: str) -> frozenset[str]:
        stack = [step_id]
        while stack:  # iterative post-order, so 1000 chained steps do not hit the recursion limit
            current = stack[-1]
            missing = [n for n in needs.get(current, ()) if n not in ancestors]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            if current not in ancestors:
                found: set[str] = set()
                for need in needs.get(current, ()):
                    found.add(need)
                    found |= ancestors[need]
                ancestors[current] = frozenset(found)
        return ancestors[step_id]

    for step_id in order:
        of(step_id)
    return ancestors


# ---- semantic checks ------------------------------------------------------------------------


def _template_strings(value: object, loc: Loc) -> Iterator[tuple[Loc, str]]:
    """(path, string) for every string containing `${{` inside a nested value."""
    if isinstance(value, str):
        if OPEN in value:
            yield loc, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _template_strings(item, (*loc, key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _template_strings(item, (*loc, index))


def when_template(when: str) -> str:
    """`when:` may be written with or without the markers: `x > 1` means `${{ x > 1 }}`."""
    return when if OPEN in when else f"{OPEN} {when} }}}}"


def _step_fields(index: int, step: StepSpec) -> Iterator[tuple[str, Loc, object]]:
    yield "with", ("steps", index, "with"), step.with_
    yield "when", ("steps", index, "when"), when_template(step.when) if isinstance(step.when, str) else None
    yield "foreach", ("steps", index, "foreach"), step.foreach


def _structure_problems(spec: WorkflowSpec) -> list[Problem]:
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    for i, step in enumerate(spec.steps):
        if step.id in first_index:
            reason = f"duplicate step id '{step.id}' (already used by steps[{first_index[step.id]}])"
            problems.append(Problem(("steps", i, "id"), reason))
        first_index.setdefault(step.id, i)
    for i, step in enumerate(spec.steps):
        here = format_loc(("steps", i))
        if step.uses not in AVAILABLE_KINDS:
            reason = f"step kind '{step.uses}' is not available in this build yet"
            problems.append(Problem(("steps", i, "uses"), reason))
        for k, need in enumerate(step.needs or ()):
            if need not in first_index:
                reason = f"step '{step.id}' needs unknown step '{need}'"
                problems.append(Problem(("steps", i, "needs", k), reason))
        if step.secrets and step.uses not in SECRET_KINDS:
            kinds = ", ".join(sorted(SECRET_KINDS))
            reason = f"step kind '{step.uses}' cannot use secrets (only {kinds} steps can)"
            problems.append(Problem(("steps", i, "secrets"), reason))
        for k, name in enumerate(step.secrets):
            if name not in spec.credentials:
                reason = (f"step '{step.id}' lists secret '{name}' but no credential '{name}' "
                          "is declared under credentials")
                problems.append(Problem(("steps", i, "secrets", k), reason))
        args_model = ARGS_MODELS.get(step.uses)
        if args_model is not None:
            try:
                args_model.model_validate(step.with_)
            except ValidationError as exc:
                problems += problems_from_validation(exc, args_model, step.with_, ("steps", i, "with"),
                                                     skip_templates=True)
        if isinstance(step.when, str) and not _is_single(when_template(step.when)):
            reason = f"{here}.when: must be true, false or one expression, not text around `${{{{ ... }}}}`"
            problems.append(Problem(("steps", i, "when"), reason))
        for _, loc, value in _step_fields(i, step):
            problems += _syntax_problems(value, loc)
        foreach = step.foreach
        single = isinstance(foreach, str) and _is_single(foreach)
        foreach_ok = foreach is None or isinstance(foreach, list) or single
        if not foreach_ok:
            reason = f"{here}.foreach: must be a list or a single `${{{{ ... }}}}` expression"
            problems.append(Problem(("steps", i, "foreach"), reason))
    problems += _syntax_problems(spec.output, ("output",))
    problems += trigger_problems(spec) + concurrency_problems(spec)
    return problems


def _is_single(text: str) -> bool:
    """True if `text` is one `${{ ... }}` (or is invalid: the syntax check reports that)."""
    try:
        return single_expression(text) is not None
    except ExpressionError:
        return True


def _syntax_problems(value: object, loc: Loc) -> list[Problem]:
    problems: list[Problem] = []
    for where, text in _template_strings(value, loc):
        try:
            check_template(text)
        except ExpressionError as exc:
            problems.append(Problem(where, f"{format_loc(where)}: {exc}"))
    return problems


def _cycle_problems(spec: WorkflowSpec) -> list[Problem]:
    order = [step.id for step in spec.steps]
    cycle = _find_cycle(order, resolve_needs(spec))
    if cycle is None:
        return []
    return [Problem(("steps", order.index(cycle[0])), f"dependency cycle: {' -> '.join(cycle)}")]


def _step_read_problem(spec: WorkflowSpec, step: StepSpec, field_name: str, read: RootRead,
                       ancestors: Mapping[str, frozenset[str]]) -> str | None:
    root, key, text = read.root, read.key, read.text
    if root not in CONTEXT_ROOTS:
        return f"unknown name '{root}' (available: {', '.join(CONTEXT_ROOTS)})"
    if root in FOREACH_ROOTS:
        if step.foreach is None:
            return f"'{root}' is only available in a step with foreach"
        if field_name != "with":
            return f"'{root}' is only available in with: ({field_name} is evaluated once, before the items)"
    if root == "steps":
        if key is None:
            return "steps must be followed by a literal step id, e.g. steps.fetch.output"
        if key == step.id:
            return f"step '{step.id}' reads its own output ({text})"
        if key not in ancestors:
            return f"step '{step.id}' reads {text} but there is no step '{key}'"
        if key not in ancestors[step.id]:
            return f"step '{step.id}' reads {text} but does not depend on {key} (add it to needs)"
    if root == "secrets":
        if field_name != "with":
            return f"secrets are only available in with: ({field_name} is decided and stored by the scheduler)"
        if step.uses not in SECRET_KINDS:
            kinds = ", ".join(sorted(SECRET_KINDS))
            return f"step kind '{step.uses}' cannot read secrets (only {kinds} steps can)"
        if key is None:
            return "secrets must be named literally, e.g. secrets.helpdesk"
        if key not in spec.credentials:
            return (f"step '{step.id}' reads secrets.{key} but no credential '{key}' "
                    "is declared under credentials")
        if key not in step.secrets:
            return f"step '{step.id}' reads secrets.{key} but does not list '{key}' under secrets"
    return None


def _output_read_problem(read: RootRead, step_ids: frozenset[str]) -> str | None:
    if read.root not in CONTEXT_ROOTS:
        return f"unknown name '{read.root}' (available: inputs, steps, run)"
    if read.root in FOREACH_ROOTS:
        return f"'{read.root}' is only available in a step with foreach"
    if read.root == "secrets":
        return "the workflow output cannot read secrets"
    if read.root == "steps" and read.key is not None and read.key not in step_ids:
        return f"output reads {read.text} but there is no step '{read.key}'"
    return None


def _reference_problems(spec: WorkflowSpec) -> list[Problem]:
    problems: list[Problem] = []
    order = [step.id for step in spec.steps]
    ancestors = compute_ancestors(order, resolve_needs(spec))
    for i, step in enumerate(spec.steps):
        for field_name, base, value in _step_fields(i, step):
            for loc, text in _template_strings(value, base):
                reads = root_reads(text)
                for read in reads:
                    reason = _step_read_problem(spec, step, field_name, read, ancestors)
                    if reason is not None:
                        problems.append(Problem(loc, f"{format_loc(loc)}: {reason}"))
                roots = {read.root for read in reads}
                if "secrets" in roots and roots & FOREACH_ROOTS:
                    # secret references are rendered again when the step runs, without the foreach item
                    reason = ("a string that reads secrets cannot also read item or index; "
                              "put them in separate values")
                    problems.append(Problem(loc, f"{format_loc(loc)}: {reason}"))
    for loc, text in _template_strings(spec.output, ("output",)):
        for read in root_reads(text):
            reason = _output_read_problem(read, frozenset(order))
            if reason is not None:
                problems.append(Problem(loc, f"{format_loc(loc)}: {reason}"))
    return problems


def find_problems(spec: WorkflowSpec) -> list[Problem]:
    """Every problem of the first failing phase (structure, then cycles, then references).

    Later phases assume earlier ones passed (e.g. ancestry needs an acyclic graph), so an empty
    list means the spec is valid.
    """
    for phase in (_structure_problems, _cycle_problems, _reference_problems):
        problems = phase(spec)
        if problems:
            return problems
    return []


# ---- the definition -------------------------------------------------------------------------


def spec_hash(spec: WorkflowSpec) -> str:
    """sha256 of the canonical JSON of the spec (sorted keys, aliases, defaults included)."""
    data = spec.model_dump(mode="json", by_alias=True)
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Definition:
    """A validated workflow, pinned by the hash of its content."""

    name: str
    """The workflow name (`name:` in the file)."""
    def_hash: str
    """sha256 hex of the canonical JSON of the spec; runs pin this."""
    spec: WorkflowSpec
    """The validated file content."""
    needs: Mapping[str, tuple[str, ...]]
    """Resolved direct dependencies of each step."""
    order: tuple[str, ...]
    """Step ids in file order."""
    source_path: str | None = None
    """The file it was loaded from, if any."""
    heavy_expressions: bool = field(default=False, compare=False)
    """Some expression can do work that grows with its input (the engine evaluates it off its event loop)."""
    _by_id: Mapping[str, StepSpec] = field(default_factory=dict, repr=False, compare=False)
    _dependents: Mapping[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def build(cls, spec: WorkflowSpec, source_path: str | None = None) -> Definition:
        """Compile a spec that has passed `find_problems` (this does not check it again)."""
        needs = resolve_needs(spec)
        order = tuple(step.id for step in spec.steps)
        dependents = {step_id: tuple(s for s in order if step_id in needs[s]) for step_id in order}
        return cls(
            name=spec.name,
            def_hash=spec_hash(spec),
            spec=spec,
            needs=needs,
            order=order,
            source_path=source_path,
            heavy_expressions=has_heavy_expressions(
                [spec.output, *(value for i, step in enumerate(spec.steps) for _, _, value in _step_fields(i, step))]),
            _by_id={step.id: step for step in spec.steps},
            _dependents=dependents,
        )

    def step(self, step_id: str) -> StepSpec:
        """The step with this id; raises NotFound for an unknown id."""
        try:
            return self._by_id[step_id]
        except KeyError:
            raise NotFound(f"workflow '{self.name}' has no step '{step_id}'") from None

    def retry_for(self, step: StepSpec) -> RetryPolicy:
        """The step's retry policy, else the workflow default, else DEFAULT_RETRY."""
        if step.retry is not None:
            return step.retry
        if self.spec.defaults is not None and self.spec.defaults.retry is not None:
            return self.spec.defaults.retry
        return DEFAULT_RETRY

    def timeout_for(self, step: StepSpec) -> float | None:
        """The step's timeout in seconds, else the workflow default, else None (no limit)."""
        if step.timeout is not None:
            return step.timeout
        return self.spec.defaults.timeout if self.spec.defaults is not None else None

    def dependents(self, step_id: str) -> tuple[str, ...]:
        """Steps that directly need `step_id`, in file order."""
        self.step(step_id)
        return self._dependents[step_id]

    def ancestors(self, step_id: str) -> frozenset[str]:
        """Every step `step_id` depends on, directly or transitively."""
        self.step(step_id)
        return compute_ancestors(self.order, self.needs)[step_id]

    def to_json(self) -> dict[str, object]:
        """The spec as JSON-compatible data (aliases such as `with`), as stored with a run."""
        return self.spec.model_dump(mode="json", by_alias=True)

    @classmethod
    def from_json(cls, data: Mapping[str, object], source_path: str | None = None) -> Definition:
        """Rebuild a stored definition, validating it again and recomputing its hash."""
        where = source_path or "<stored definition>"
        try:
            spec = WorkflowSpec.model_validate(data)
        except ValidationError as exc:
            problems = problems_from_validation(exc, WorkflowSpec, data)
            if not problems:  # pragma: no cover - pydantic always reports at least one error
                raise DefinitionError(where, str(exc)) from None
            raise DefinitionError(where, min(problems, key=lambda p: p.missing).reason) from None
        problems = find_problems(spec)
        if problems:
            raise DefinitionError(where, min(problems, key=lambda p: p.missing).reason)
        return cls.build(spec, source_path)
