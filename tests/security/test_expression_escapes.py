"""Hostile `${{ }}` expressions that try to leave the expression language: refused at load time, located.

The expression engine is not Python `eval`: only literals, context reads, operators and the functions
in FUNCTIONS exist. Every classic sandbox escape must be a load-time error at the line and column of
the string that holds it, so a hostile save never becomes a version a run could be pinned to.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.services import REPO_ROOT
from worker.boundary import load_checks
from worker.config import Settings
from worker.definitions import load_file
from worker.errors import DefinitionError

ESCAPES = {
    "dunder import": "__import__('os').environ",
    "builtins through a name": "__builtins__",
    "class walk": "''.__class__.__mro__[1].__subclasses__()",
    "attribute of a literal": "().__class__",
    "attribute of the context": "inputs.__class__",
    "method call": "'{0.__class__}'.format(inputs)",
    "getattr": "getattr(inputs, '__class__')",
    "eval": "eval('1+1')",
    "exec": "exec('import os')",
    "open": "open('/proc/self/environ')",
    "globals": "globals()",
    "vars": "vars()",
    "type": "type(inputs)",
    "lambda": "(lambda: 1)()",
    "comprehension": "[x for x in inputs]",
    "generator": "sum(x for x in [1])",
    "walrus": "(x := 1)",
    "f-string": "f'{inputs}'",
    "star unpacking": "max(*[1, 2])",
    "kwargs unpacking": "get(**inputs)",
    "set literal": "{1, 2}",
    "bitwise shift": "1 << 100000",
    "range": "range(10**9)",
    "os through a name": "os.environ",
    "env root": "env.VAULT_TOKEN",
    "private key read": "inputs._secret",
    "await": "await inputs",
}


def _write(workflows: Path, name: str, expression: str) -> Path:
    path = workflows / f"{name}.yaml"
    # the expression sits on line 5, after `out: "${{ ` (column 14 is where the string starts)
    path.write_text(
        f"name: {name}\n"
        "steps:\n"
        "  - id: s\n"
        "    uses: set\n"
        f"    with: {{out: {json.dumps('${{ ' + expression + ' }}')}}}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_escape_is_refused_at_load_time_with_its_location(case: str, tmp_path: Path) -> None:
    settings = Settings(workflows_dir=tmp_path)
    path = _write(tmp_path, "hostile", ESCAPES[case])
    with pytest.raises(DefinitionError) as info:
        load_file(path, tmp_path, checks=load_checks(settings))
    error = info.value
    assert error.line == 5, f"{case}: {error}"
    assert error.column is not None and error.column >= 11
    assert str(error).startswith(f"{path}:5:")


def test_string_formatting_with_percent_fails_when_evaluated() -> None:
    # `%` is arithmetic on numbers; on a string it would be printf formatting (`%(x)s` reads mappings), refused
    from worker.definitions.expressions import evaluate
    from worker.errors import ExpressionError

    with pytest.raises(ExpressionError, match="string formatting with % is not supported"):
        evaluate("'%s' % inputs", {"inputs": {"a": 1}})


def test_agentrt_validate_reports_a_hostile_expression_as_file_line_column(tmp_path: Path) -> None:
    path = _write(tmp_path, "hostile", ESCAPES["dunder import"])
    res = subprocess.run([sys.executable, "-m", "worker", "validate", "--json", str(path)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    [result] = json.loads(res.stdout)
    assert result["ok"] is False and result["line"] == 5
    assert "__import__" in result["error"]
