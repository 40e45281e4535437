"""Loading workflow YAML into a Definition: the happy path, hashing, and every located error."""

from __future__ import annotations

import os
import textwrap
import time
from pathlib import Path

import pytest

from worker.definitions import Definition, load_bytes, load_file, load_text, loader
from worker.definitions.loader import MAX_FILE_BYTES
from worker.definitions.schema import DEFAULT_RETRY
from worker.errors import DefinitionError, NotFound

REFUND = textwrap.dedent(
    """\
    name: refund-request
    description: Look up a ticket, ask a human above 100, refund.
    inputs:
      ticket_id: {type: string}
    credentials:
      helpdesk: {path: helpdesk/api}
    defaults:
      retry: {max_attempts: 2}
      timeout: 1m
    steps:
      - id: fetch
        uses: http
        with:
          method: GET
          url: "https://helpdesk.example/api/tickets/${{ inputs.ticket_id }}"
          headers: {Authorization: "Bearer ${{ secrets.helpdesk.token }}"}
        retry: {max_attempts: 5, initial_interval: 1s, backoff: 2.0, max_interval: 1m}
        timeout: 30s
        secrets: [helpdesk]
      - id: approve
        uses: approval
        when: "${{ steps.fetch.output.json.amount > 100 }}"
        with: {prompt: "Refund ${{ steps.fetch.output.json.amount }}?", timeout: 4h, on_timeout: reject}
      - id: refund
        uses: set
        needs: [approve]
        with: {ticket: "${{ inputs.ticket_id }}", amount: "${{ steps.fetch.output.json.amount }}"}
    output: {refunded: "${{ steps.refund.output.amount }}"}
    """
)


ONE_STEP = "name: x\nsteps:\n  - id: a\n    uses: set\n"


def load_error(text: str, path: str = "wf.yaml") -> DefinitionError:
    with pytest.raises(DefinitionError) as info:
        load_text(text, path)
    return info.value


def doc(text: str) -> str:
    return textwrap.dedent(text)


# ---- the happy path -----------------------------------------------------------------------------


def test_a_valid_workflow_compiles() -> None:
    definition = load_text(REFUND, "workflows/refund.yaml")
    assert definition.name == "refund-request"
    assert definition.source_path == "workflows/refund.yaml"
    assert definition.order == ("fetch", "approve", "refund")
    assert dict(definition.needs) == {"fetch": (), "approve": ("fetch",), "refund": ("approve",)}
    assert definition.dependents("fetch") == ("approve",)
    assert definition.dependents("refund") == ()
    assert definition.ancestors("refund") == frozenset({"fetch", "approve"})
    fetch, approve = definition.step("fetch"), definition.step("approve")
    assert fetch.with_["method"] == "GET"
    assert definition.retry_for(fetch).max_attempts == 5
    assert definition.retry_for(approve).max_attempts == 2  # the workflow default
    assert definition.timeout_for(fetch) == 30.0
    assert definition.timeout_for(approve) == 60.0
    assert len(definition.def_hash) == 64
    with pytest.raises(NotFound):
        definition.step("nope")


def test_without_defaults_the_built_in_retry_applies_and_there_is_no_timeout() -> None:
    definition = load_text("name: tiny\nsteps:\n  - {id: only, uses: set, with: {a: 1}}\n")
    step = definition.step("only")
    assert definition.retry_for(step) == DEFAULT_RETRY
    assert definition.timeout_for(step) is None
    assert definition.source_path is None


def test_explicit_needs_may_point_forward_and_form_a_dag() -> None:
    definition = load_text(doc("""\
        name: dag
        steps:
          - {id: join, uses: set, needs: [left, right], with: {l: "${{ steps.left.output }}"}}
          - {id: left, uses: set, needs: []}
          - {id: right, uses: set, needs: []}
        """))
    assert dict(definition.needs) == {"join": ("left", "right"), "left": (), "right": ()}
    assert definition.dependents("left") == ("join",)


def test_foreach_steps_may_use_item_and_index() -> None:
    definition = load_text(doc("""\
        name: loop
        inputs:
          things: {type: array}
        steps:
          - id: each
            uses: set
            foreach: "${{ inputs.things }}"
            when: "${{ len(inputs.things) < 10 }}"
            with: {thing: "${{ item }}", position: "${{ index }}"}
        """))
    assert definition.step("each").foreach == "${{ inputs.things }}"


def test_output_may_reference_any_step() -> None:
    definition = load_text(doc("""\
        name: out
        steps:
          - {id: a, uses: set, needs: []}
          - {id: b, uses: set, needs: []}
        output: {a: "${{ steps.a.output }}", b: "${{ steps['b'].status }}"}
        """))
    assert definition.spec.output == {"a": "${{ steps.a.output }}", "b": "${{ steps['b'].status }}"}


def test_timestamps_stay_text_and_yaml_scalars_keep_their_types() -> None:
    definition = load_text(doc("""\
        name: types
        steps:
          - id: s
            uses: set
            with: {when: 2024-01-02, n: 0x10, f: 1.5, b: true, z: null, s: '007'}
        """))
    assert definition.step("s").with_ == {
        "when": "2024-01-02", "n": 16, "f": 1.5, "b": True, "z": None, "s": "007",
    }


# ---- hashing and storage ------------------------------------------------------------------------


def test_hash_ignores_formatting_and_comments() -> None:
    reformatted = doc("""\
        # the same workflow, written differently
        name:   refund-request
        description: "Look up a ticket, ask a human above 100, refund."
        inputs: {ticket_id: {type: string}}
        credentials: {helpdesk: {path: helpdesk/api}}
        defaults: {timeout: 1m, retry: {max_attempts: 2}}
        steps:
          - id: fetch
            uses: http
            with:
              url: "https://helpdesk.example/api/tickets/${{ inputs.ticket_id }}"   # key order differs
              method: GET
              headers:
                Authorization: "Bearer ${{ secrets.helpdesk.token }}"
            retry:
              max_attempts: 5
              initial_interval: 1s
              backoff: 2.0
              max_interval: 1m
            timeout: 30s
            secrets:
              - helpdesk
          - {id: approve, uses: approval, when: "${{ steps.fetch.output.json.amount > 100 }}",
             with: {prompt: "Refund ${{ steps.fetch.output.json.amount }}?", timeout: 4h, on_timeout: reject}}
          - id: refund
            uses: set
            needs: [approve]
            with: {ticket: "${{ inputs.ticket_id }}", amount: "${{ steps.fetch.output.json.amount }}"}
        output:
          refunded: "${{ steps.refund.output.amount }}"
        """)
    assert load_text(reformatted).def_hash == load_text(REFUND).def_hash


def test_hash_changes_when_a_value_changes() -> None:
    original = load_text(REFUND).def_hash
    assert load_text(REFUND.replace("max_attempts: 5", "max_attempts: 6")).def_hash != original
    assert load_text(REFUND.replace("amount > 100", "amount > 200")).def_hash != original
    assert load_text(REFUND.replace("timeout: 4h", "timeout: 5h")).def_hash != original


def test_from_json_round_trip_keeps_the_hash() -> None:
    definition = load_text(REFUND, "refund.yaml")
    stored = definition.to_json()
    assert stored["steps"][0]["with"]["method"] == "GET"  # type: ignore[index]  # aliases, not field names
    again = Definition.from_json(stored, source_path="pinned")
    assert again.def_hash == definition.def_hash
    assert again.spec == definition.spec
    assert again.needs == definition.needs
    assert again.order == definition.order
    assert again.source_path == "pinned"


def test_from_json_validates_again() -> None:
    stored = load_text(REFUND).to_json()
    stored["steps"][2]["needs"] = ["nope"]  # type: ignore[index]
    with pytest.raises(DefinitionError, match="needs unknown step 'nope'"):
        Definition.from_json(stored)
    with pytest.raises(DefinitionError, match="missing required key 'name'"):
        Definition.from_json({"steps": [{"id": "a", "uses": "set"}]})


# ---- YAML-level errors --------------------------------------------------------------------------


def test_invalid_utf8_reports_the_line_of_the_bad_byte() -> None:
    data = b"name: x\nsteps:\n  - id: caf\xe9\n    uses: set\n"
    with pytest.raises(DefinitionError) as info:
        load_bytes(data, "bad.yaml")
    error = info.value
    assert (error.line, error.column) == (3, 12)
    assert "not valid UTF-8" in error.reason
    assert "offset 26" in error.reason
    assert error.excerpt == "  - id: caf\ufffd"


def test_yaml_syntax_error_uses_the_problem_position() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n   bad: [1\n")
    assert error.reason.startswith("YAML syntax error:")
    assert error.line is not None and error.line >= 4
    error = load_error("name: x\nsteps: [a, b\ndescription: y\n")
    assert error.reason.startswith("YAML syntax error:")
    assert error.line == 3


def test_python_tags_are_refused() -> None:
    error = load_error(ONE_STEP + "    with: {x: !!python/object/apply:os.system [ls]}\n")
    assert (error.line, error.column) == (5, 15)
    assert "YAML tag '!!python/object/apply:os.system' is not allowed" in error.reason
    assert error.excerpt == "    with: {x: !!python/object/apply:os.system [ls]}"


def test_other_non_standard_tags_are_refused() -> None:
    error = load_error("name: !custom x\nsteps: []\n")
    assert (error.line, error.column) == (1, 7)
    assert "YAML tag '!custom' is not allowed" in error.reason
    error = load_error("name: x\nsteps: !!set {a, b}\n")
    assert "'!!set' is not allowed" in error.reason


def test_aliases_are_refused() -> None:
    error = load_error("name: x\nbase: &b {uses: set}\nsteps:\n  - *b\n")
    assert (error.line, error.column) == (2, 7)
    assert "YAML aliases are not allowed" in error.reason


def test_alias_bomb_is_refused_immediately() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 9) + "]" for i in range(8)]
    started = time.perf_counter()
    error = load_error("\n".join(lines) + "\n")
    assert time.perf_counter() - started < 0.5
    assert "YAML aliases are not allowed" in error.reason
    assert error.line == 1


def test_merge_keys_and_duplicate_keys_are_refused() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    id: b\n")
    assert (error.line, error.column) == (5, 5)
    assert "duplicate key 'id' (first on line 3)" in error.reason
    error = load_error("name: x\nsteps:\n  - <<: {id: a}\n    uses: set\n")
    assert (error.line, error.column) == (3, 5)
    assert "merge keys" in error.reason


def test_non_string_keys_are_refused() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    with: {yes: 1}\n")
    assert (error.line, error.column) == (5, 12)
    assert "mapping keys must be strings: quote 'yes'" in error.reason
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    with: {3: 1}\n")
    assert "mapping keys must be strings" in error.reason


def test_a_plain_on_key_is_text_as_in_yaml_1_2() -> None:
    # `on:` (triggers) reads as the word, not YAML 1.1's boolean; the other boolean words stay refused
    defn = load_text("name: x\non: {event: {name: e}}\nsteps:\n  - {id: a, uses: set, with: {on: 1}}\n")
    assert defn.spec.on is not None and defn.spec.steps[0].with_ == {"on": 1}
    for word in ("off", "true", "No"):
        assert "mapping keys must be strings" in load_error(
            f"name: x\nsteps:\n  - {{id: a, uses: set, with: {{{word}: 1}}}}\n").reason


def test_files_over_one_mebibyte_are_refused_before_parsing(tmp_path: Path) -> None:
    big = "name: x\n# " + "a" * MAX_FILE_BYTES + "\n"
    with pytest.raises(DefinitionError, match="larger than"):
        load_text(big)
    with pytest.raises(DefinitionError, match="larger than"):
        load_bytes(big.encode())
    path = tmp_path / "big.yaml"
    path.write_text(big)
    with pytest.raises(DefinitionError, match="larger than") as info:
        load_file(path)
    assert info.value.path == str(path)


def test_deep_nesting_is_a_definition_error_not_a_recursion_error() -> None:
    error = load_error("name: x\nsteps: " + "[" * 20000 + "]" * 20000 + "\n")
    assert "nest" in error.reason  # our limit, or libyaml's own when it scans ahead
    assert error.line == 2
    assert "nested more than 64 levels" in load_error("name: x\nsteps: " + "[" * 70 + "]" * 70 + "\n").reason
    block = "name: x\nsteps:\n" + "".join("  " * i + "- \n" for i in range(200))
    assert "nested more than" in load_error(block).reason


def test_control_characters_are_refused_with_a_position() -> None:
    error = load_error("name: x\nsteps: [\x07]\n")
    assert (error.line, error.column) == (2, 9)
    assert "#x0007" in error.reason


def test_empty_file_multiple_documents_and_non_mapping_top_level() -> None:
    assert "empty" in load_error("# nothing here\n").reason
    error = load_error("- id: a\n  uses: set\n")
    assert (error.line, error.column) == (1, 1)
    assert "top level must be a mapping" in error.reason
    error = load_error("name: a\nsteps: []\n---\nname: b\n")
    assert error.line == 3
    assert "single document" in error.reason


@pytest.fixture(params=["libyaml", "pure-python"])
def yaml_parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with libyaml's parser (used when available) and with PyYAML's own."""
    if request.param == "pure-python":
        monkeypatch.setattr(loader, "_FastComposer", None)
    return str(request.param)


@pytest.mark.parametrize(
    ("text", "position", "reason_part"),
    [
        ("name: x\nsteps: ['\u00e9', \x07]\n", (2, 14), "#x0007"),
        ("name: x\nbase: &b {uses: set}\nsteps:\n  - *b\n", (2, 7), "YAML aliases are not allowed"),
        ("name: x\nsteps: [{id: a, uses: set, with: !!python/name:os.system }]\n", (2, 34), "!!python/name"),
        ("name: x\nsteps: []\nname: y\n", (3, 1), "duplicate key 'name'"),
        ("name: x\nsteps: " + "[" * 70 + "]" * 70 + "\n", (2, 71), "nested more than 64 levels"),
        ("name: x\nsteps: [{id: a, uses: set, retry: {max_attempts: 0}}]\n", (2, 50), "equal to 1"),
    ],
)
def test_both_yaml_parsers_locate_errors_the_same_way(
    yaml_parser: str, text: str, position: tuple[int, int], reason_part: str
) -> None:
    error = load_error(text)
    assert (error.line, error.column) == position
    assert reason_part in error.reason


# ---- schema errors ------------------------------------------------------------------------------


def test_pydantic_error_points_at_the_offending_value() -> None:
    error = load_error(doc("""\
        name: x
        steps:
          - id: a
            uses: set
          - id: b
            uses: sleep
          - id: c
            uses: set
            retry:
              max_attempts: 0
        """))
    assert (error.line, error.column) == (10, 21)
    assert error.reason == "steps[2].retry.max_attempts: Input should be greater than or equal to 1"
    assert error.excerpt == "      max_attempts: 0"
    assert error.location == "wf.yaml:10:21"


def test_unknown_keys_list_the_allowed_ones() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    neds: [b]\n")
    assert (error.line, error.column) == (5, 5)
    assert error.reason.startswith("unknown key 'neds' in steps[0] (allowed: id, uses, name,")
    assert "needs" in error.reason
    error = load_error("name: x\nstep: []\n")
    assert (error.line, error.column) == (2, 1)
    assert "unknown key 'step' (allowed: name, description, inputs" in error.reason
    error = load_error("name: x\ninputs:\n  t: {typ: string}\nsteps: [{id: a, uses: set}]\n")
    assert (error.line, error.column) == (3, 7)
    assert "unknown key 'typ' in inputs.t (allowed: type, description, default, required)" in error.reason


def test_missing_required_key_points_at_the_mapping() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    with: {a: 1}\n")
    assert (error.line, error.column) == (3, 5)
    assert error.reason == "steps[0]: missing required key 'uses'"
    assert load_error("steps: [{id: a, uses: set}]\n").reason == "missing required key 'name'"


def test_bad_values_in_common_fields() -> None:
    error = load_error("name: Bad Name\nsteps: [{id: a, uses: set}]\n")
    assert (error.line, error.column) == (1, 7)
    assert error.reason.startswith("name: String should match pattern")
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    timeout: soon\n")
    assert (error.line, error.column) == (5, 14)
    assert "steps[0].timeout: 'soon' is not a duration" in error.reason
    error = load_error("name: x\nsteps: []\n")
    assert error.reason.startswith("steps: List should have at least 1 item")


def test_wrong_shapes_are_described_in_yaml_terms() -> None:
    error = load_error("name: x\nsteps: [1]\n")
    assert (error.line, error.column) == (2, 9)
    assert error.reason == "steps[0]: Input should be a mapping"
    error = load_error("name: x\nsteps: [{id: a, uses: set, needs: a}]\n")
    assert error.reason == "steps[0].needs: Input should be a valid list"


def test_unknown_step_kind_lists_the_valid_kinds() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: htp\n")
    assert (error.line, error.column) == (4, 11)
    assert error.reason == (
        "steps[0].uses: unknown step kind 'htp' "
        "(valid kinds: agent, approval, http, llm, python, set, sleep, tool, wait, workflow)"
    )


# ---- graph errors -------------------------------------------------------------------------------


def test_duplicate_step_ids() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n  - id: a\n    uses: set\n")
    assert (error.line, error.column) == (5, 9)
    assert "duplicate step id 'a'" in error.reason


def test_needs_naming_an_unknown_step() -> None:
    error = load_error(ONE_STEP + "  - id: b\n    uses: set\n    needs: [a, c]\n")
    assert (error.line, error.column) == (7, 16)
    assert error.reason == "step 'b' needs unknown step 'c'"


def test_dependency_cycle_is_named_and_located_at_its_first_step() -> None:
    error = load_error(doc("""\
        name: x
        steps:
          - id: start
            uses: set
          - id: a
            uses: set
            needs: [c]
          - id: b
            uses: set
          - id: c
            uses: set
        """))
    assert (error.line, error.column) == (5, 5)
    assert error.reason == "dependency cycle: a -> c -> b -> a"
    assert error.excerpt == "  - id: a"
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    needs: [a]\n")
    assert error.reason == "dependency cycle: a -> a"
    assert (error.line, error.column) == (3, 5)


# ---- with: arguments ----------------------------------------------------------------------------


def test_with_unknown_key() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: http\n    with:\n      url: https://x\n"
                       "      verb: GET\n")
    assert (error.line, error.column) == (7, 7)
    assert error.reason.startswith("unknown key 'verb' in steps[0].with (allowed: method, url, headers,")


def test_unknown_key_is_reported_before_the_missing_key_it_probably_caused() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: http\n    with: {urll: 'x'}\n")
    assert (error.line, error.column) == (5, 12)
    assert "unknown key 'urll'" in error.reason


def test_with_missing_required_key() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: approval\n    with:\n      timeout: 4h\n")
    assert (error.line, error.column) == (6, 7)
    assert error.reason == "steps[0].with: missing required key 'prompt'"


def test_with_wrong_type() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: http\n"
                       "    with: {url: x, expect_status: [200, ok]}\n")
    assert (error.line, error.column) == (5, 41)
    assert error.reason.startswith("steps[0].with.expect_status[1]: Input should be a valid integer")


def test_with_templates_are_checked_at_run_time_not_load_time() -> None:
    definition = load_text(doc("""\
        name: x
        inputs: {m: {}, codes: {}, t: {}, wf: {}}
        steps:
          - id: a
            uses: http
            with:
              method: "${{ inputs.m }}"
              url: https://x
              expect_status: "${{ inputs.codes }}"
              timeout: "${{ inputs.t }}"
          - id: b
            uses: workflow
            with: {workflow: "${{ inputs.wf }}"}
        """))
    assert definition.step("a").with_["method"] == "${{ inputs.m }}"


def test_set_accepts_any_mapping() -> None:
    definition = load_text("name: x\nsteps:\n"
                           "  - {id: a, uses: set, with: {anything: 1, nested: {deep: [1, 2]}}}\n")
    assert definition.step("a").with_ == {"anything": 1, "nested": {"deep": [1, 2]}}


# ---- expressions --------------------------------------------------------------------------------


def test_invalid_expression_points_at_its_string() -> None:
    error = load_error(doc("""\
        name: x
        steps:
          - id: a
            uses: set
            with:
              nested: {list: [ok, "${{ 1 + }}"]}
        """))
    assert (error.line, error.column) == (6, 27)
    assert error.reason == "steps[0].with.nested.list[1]: expression `1 +`: invalid syntax"


@pytest.mark.parametrize(
    ("field", "value", "reason_part"),
    [
        ("when", '"${{ inputs.__class__ }}"', "'__class__' is not allowed"),
        ("foreach", '"${{ [x for x in inputs.a] }}"', "comprehensions are not allowed"),
        ("with", '{v: "${{ open(1) }}"}', "unknown function 'open'"),
        ("with", '{v: "${{ inputs.a "}', "unclosed `${{`"),
    ],
)
def test_invalid_expressions_in_every_field(field: str, value: str, reason_part: str) -> None:
    error = load_error(f"name: x\nsteps:\n  - id: a\n    uses: set\n    {field}: {value}\n")
    assert error.line == 5
    assert reason_part in error.reason


def test_invalid_expression_in_output() -> None:
    error = load_error("name: x\nsteps: [{id: a, uses: set}]\noutput: {r: '${{ 1 +* 2 }}'}\n")
    assert (error.line, error.column) == (3, 13)
    assert "output.r: expression `1 +* 2`: invalid syntax" in error.reason


def test_unknown_root_name() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    with: {v: '${{ input.x }}'}\n")
    assert (error.line, error.column) == (5, 15)
    assert "unknown name 'input' (available: inputs, steps, run, item, index, secrets)" in error.reason


def test_item_and_index_outside_foreach() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    with: {v: '${{ item.name }}'}\n")
    assert (error.line, error.column) == (5, 15)
    assert "'item' is only available in a step with foreach" in error.reason
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    foreach: '${{ [index] }}'\n")
    assert "'index' is only available in with: (foreach is evaluated once, before the items)" in error.reason
    error = load_error(ONE_STEP + "    foreach: [1, 2]\n    when: '${{ item > 1 }}'\n")
    assert (error.line, error.column) == (6, 11)
    assert "'item' is only available in with: (when is evaluated once" in error.reason
    error = load_error("name: x\nsteps: [{id: a, uses: set, foreach: [1]}]\noutput: '${{ item }}'\n")
    assert "'item' is only available in a step with foreach" in error.reason


def test_reading_an_unknown_step() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    with: {v: '${{ steps.zz.output }}'}\n")
    assert (error.line, error.column) == (5, 15)
    assert "step 'a' reads steps.zz.output but there is no step 'zz'" in error.reason


def test_reading_a_step_that_is_not_an_ancestor() -> None:
    error = load_error(doc("""\
        name: x
        steps:
          - id: a
            uses: set
          - id: b
            uses: set
            needs: [a]
            when: "${{ steps.c.output.ok }}"
          - id: c
            uses: set
            needs: [a]
        """))
    assert (error.line, error.column) == (8, 11)
    assert "step 'b' reads steps.c.output but does not depend on c" in error.reason


def test_reading_a_transitive_ancestor_is_fine_and_reading_itself_is_not() -> None:
    load_text(doc("""\
        name: x
        steps:
          - {id: a, uses: set}
          - {id: b, uses: set}
          - {id: c, uses: set, with: {v: "${{ steps['a'].output }}"}}
        """))
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    with: {v: '${{ steps.a.status }}'}\n")
    assert "step 'a' reads its own output (steps.a.status)" in error.reason


def test_dynamic_step_access_in_a_step_is_refused() -> None:
    error = load_error(ONE_STEP + "    with: {v: '${{ steps[inputs.which] }}'}\n")
    assert "steps must be followed by a literal step id" in error.reason


def test_secrets_must_be_declared_and_granted() -> None:
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    secrets: [helpdesk]\n")
    assert (error.line, error.column) == (5, 15)
    assert "step 'a' lists secret 'helpdesk' but no credential 'helpdesk' is declared" in error.reason

    error = load_error(doc("""\
        name: x
        credentials: {helpdesk: {path: hd}}
        steps:
          - id: a
            uses: set
            secrets: [helpdesk]
            with: {t: "${{ secrets.payments.token }}"}
        """))
    assert (error.line, error.column) == (7, 15)
    assert "step 'a' reads secrets.payments but no credential 'payments' is declared under credentials" in (
        error.reason
    )

    error = load_error(doc("""\
        name: x
        credentials: {helpdesk: {path: hd}}
        steps:
          - id: a
            uses: set
            with: {t: "${{ secrets.helpdesk.token }}"}
        """))
    assert "step 'a' reads secrets.helpdesk but does not list 'helpdesk' under secrets" in error.reason


def test_output_cannot_read_secrets_or_unknown_steps() -> None:
    base = "name: x\ncredentials: {h: {path: p}}\nsteps: [{id: a, uses: set, secrets: [h]}]\n"
    error = load_error(base + "output: '${{ secrets.h.token }}'\n")
    assert (error.line, error.column) == (4, 9)
    assert "the workflow output cannot read secrets" in error.reason
    error = load_error(base + "output: '${{ steps.b.output }}'\n")
    assert "output reads steps.b.output but there is no step 'b'" in error.reason


def test_when_and_foreach_shapes() -> None:
    # `when:` is an expression with or without the markers
    definition = load_text(ONE_STEP + "  - id: b\n    uses: set\n    when: steps.a.output.ok and inputs.go\n")
    assert definition.step("b").when == "steps.a.output.ok and inputs.go"
    error = load_error(ONE_STEP + "  - id: b\n    uses: set\n    when: steps.c.output.ok\n")
    assert (error.line, error.column) == (7, 11)
    assert "step 'b' reads steps.c.output but there is no step 'c'" in error.reason
    error = load_error(ONE_STEP + "    when: yes please\n")
    assert (error.line, error.column) == (5, 11)
    assert error.reason == "steps[0].when: expression `yes please`: invalid syntax"
    error = load_error(ONE_STEP + "    when: 'amount ${{ inputs.n }}'\n")
    assert "must be true, false or one expression" in error.reason
    error = load_error("name: x\nsteps:\n  - id: a\n    uses: set\n    foreach: 'items: ${{ [1] }}'\n")
    assert "must be a list or a single `${{ ... }}` expression" in error.reason
    load_text("name: x\nsteps:\n  - id: a\n    uses: set\n    when: false\n    foreach: [1, 2]\n")


def test_the_earliest_problem_in_the_file_is_reported() -> None:
    error = load_error(doc("""\
        name: x
        steps:
          - id: a
            uses: set
            with: {v: "${{ 1 + }}"}
          - id: b
            uses: llm
        """))
    assert error.line == 5


# ---- files --------------------------------------------------------------------------------------


def test_load_file_reads_utf8_and_records_the_path(tmp_path: Path) -> None:
    path = tmp_path / "refund.yaml"
    path.write_text(REFUND, encoding="utf-8")
    definition = load_file(path, root=tmp_path)
    assert definition.source_path == str(path)
    assert definition.def_hash == load_text(REFUND).def_hash


def test_symlink_pointing_outside_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    root = tmp_path / "workflows"
    outside.mkdir()
    root.mkdir()
    (outside / "secret.yaml").write_text(REFUND)
    link = root / "linked.yaml"
    link.symlink_to(outside / "secret.yaml")
    with pytest.raises(DefinitionError) as info:
        load_file(link, root=root)
    assert info.value.reason == "symlink points outside the workflows directory"
    assert info.value.path == str(link)
    # a symlink that stays inside the directory is fine
    (root / "real.yaml").write_text(REFUND)
    (root / "alias.yaml").symlink_to(root / "real.yaml")
    assert load_file(root / "alias.yaml", root=root).name == "refund-request"
    # and without a root the caller has taken responsibility for the path
    assert load_file(link).name == "refund-request"


def test_non_regular_files_are_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    with pytest.raises(DefinitionError, match="not a regular file"):
        load_file(fifo, root=tmp_path)
    (tmp_path / "dir.yaml").mkdir()
    with pytest.raises(DefinitionError, match="not a regular file"):
        load_file(tmp_path / "dir.yaml", root=tmp_path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="not found"):
        load_file(tmp_path / "gone.yaml", root=tmp_path)
    with pytest.raises(DefinitionError, match="not found"):
        load_file(tmp_path / "gone.yaml")
