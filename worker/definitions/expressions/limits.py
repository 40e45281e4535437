"""The limits on what one expression evaluation may build, and its work budget.

Every intermediate result an expression builds counts: each operator and function that can do real
work (`sorted`, `join`, `+`, `*`, slices, `fromjson`, ...) asks the evaluation's `Budget` before it
does that work. A request is refused when its own result would exceed `MAX_ITEMS` /
`MAX_TEXT_LENGTH`, when the running total of everything the evaluation built would exceed
`MAX_WORK_UNITS`, or when the evaluation has used more than its CPU time (`set_budget`, from
`AGENTRT_EXPRESSION_BUDGET_MS`; default 50 ms).

One evaluation is one `evaluate(...)` or one `render(...)` call (a step's whole `with:`, a `when:`,
a `foreach:`, the workflow `output:`). The CPU clock (`time.thread_time`, so time spent waiting for
the GIL in a thread is not counted) is read at the first sizeable request and then at least every
`_CLOCK_EVERY` requests: an expression that calls no function never reads it. Off the main thread,
an evaluation that has run for more than `_YIELD_AFTER_S` also yields the GIL at each clock read.
"""

from __future__ import annotations

import threading
import time

MAX_EXPRESSION_LENGTH = 4096
"""Longest accepted expression source, in characters."""
MAX_EXPRESSION_DEPTH = 64
"""Deepest accepted expression syntax tree (bounds the recursive evaluator)."""
MAX_TEXT_LENGTH = 8 * 1024 * 1024
"""Longest string an expression may build or serialise, in characters."""
MAX_ITEMS = 100_000
"""Longest list (or most items of any input or result) an expression may build or sort."""
MAX_INT_BITS = 65_536
"""Largest integer, in bits, that `*` and `**` may produce."""
MAX_ROUND_DIGITS = 100
"""Largest `ndigits` (either sign) accepted by `round`."""
MAX_JSON_DEPTH = 100
"""Deepest document `fromjson` accepts."""
MAX_WORK_UNITS = 4 * MAX_TEXT_LENGTH
"""Total size (characters, items, comparisons) of everything one evaluation may build or compare."""
DEFAULT_BUDGET_MS = 50.0
"""CPU time one evaluation may use unless `set_budget` says otherwise (AGENTRT_EXPRESSION_BUDGET_MS)."""

_CLOCK_EVERY = 32
"""Small requests between two reads of the CPU clock (a request of `_SMALL` units or more always reads it)."""
_SMALL = 256


_YIELD_AFTER_S = 0.002
"""CPU time after which an evaluation off the main thread yields the GIL at every clock read ..."""
_YIELD_S = 0.0002
"""... for this long (sleep(0) would not do: the yielding thread takes the GIL back at once)."""


class LimitError(Exception):
    """A limit was hit; the evaluator turns it into an ExpressionError naming the expression."""


_cpu_budget_s = DEFAULT_BUDGET_MS / 1000


def set_budget(*, cpu_ms: float) -> None:
    """Set the CPU time one evaluation may use, for every thread (the worker calls it once at start)."""
    global _cpu_budget_s
    if cpu_ms <= 0:
        raise ValueError(f"expression budget must be positive, got {cpu_ms} ms")
    _cpu_budget_s = cpu_ms / 1000


def budget_ms() -> float:
    """The CPU time one evaluation may use, in milliseconds."""
    return _cpu_budget_s * 1000


class Budget:
    """What is left of one evaluation's work: units and CPU time (one per thread, reset per evaluation)."""

    __slots__ = ("active", "calls", "deadline", "units", "yields")

    def __init__(self) -> None:
        self.yields = threading.current_thread() is not threading.main_thread()
        self.active = False
        self.units = MAX_WORK_UNITS
        self.deadline = 0.0  # 0.0: the clock has not been read yet in this evaluation
        self.calls = 0

    def reset(self) -> None:
        self.active = True
        self.units = MAX_WORK_UNITS
        self.deadline = 0.0
        self.calls = 0

    def charge(self, units: int, what: str) -> None:
        """Account for `units` of work about to be done by `what`; raise LimitError if over budget."""
        if not self.active:
            return
        self.units -= units
        if self.units < 0:
            raise LimitError(f"{what}: the expression exceeded its work budget of {MAX_WORK_UNITS} units "
                             f"(everything one evaluation builds or compares, in characters and items)")
        self.calls += 1
        if units >= _SMALL or self.calls % _CLOCK_EVERY == 0:
            self.check_clock()

    def check_clock(self) -> None:
        now = time.thread_time()
        if self.deadline == 0.0:
            self.deadline = now + _cpu_budget_s
            return
        if self.yields and now > self.deadline - _cpu_budget_s + _YIELD_AFTER_S:
            # a long evaluation in a thread: give the GIL away for a moment, so the event loop (which
            # otherwise waits up to sys.getswitchinterval() for it at every wake-up) goes first
            time.sleep(_YIELD_S)
        if now > self.deadline:
            raise LimitError(f"the expression exceeded its work budget of {budget_ms():g} ms CPU "
                             f"(AGENTRT_EXPRESSION_BUDGET_MS)")


_local = threading.local()


def current() -> Budget:
    """This thread's budget (inactive outside an evaluation: then nothing is counted)."""
    budget: Budget | None = getattr(_local, "budget", None)
    if budget is None:
        budget = _local.budget = Budget()
    return budget


def charge(units: int, what: str) -> None:
    """Charge this thread's running evaluation (no-op outside one)."""
    current().charge(units, what)


def check_size(length: int, limit: int, what: str) -> None:
    """Refuse a result of `length` characters/items when it is over `limit`."""
    if length > limit:
        unit = "characters" if limit == MAX_TEXT_LENGTH else "items"
        raise LimitError(f"{what} would make {length} {unit} (at most {limit})")
