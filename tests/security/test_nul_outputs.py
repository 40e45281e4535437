"""Binary noise from a callee (a NUL character) cannot wedge a run.

Postgres stores neither U+0000 in jsonb nor NUL in text. A hostile or broken endpoint that answers
with one used to make the step's completion fail to commit on every attempt, looping the run as
"interrupted". The output is now kept with the NUL shown as U+FFFD, and the run finishes.
"""

from __future__ import annotations

import logging

import pytest

from tests.support.http_sink import HttpSink
from tests.support.runtime import client_for, eventually, running_worker, write_workflow
from worker.config import Settings


async def test_a_nul_in_an_http_body_a_python_result_and_a_log_line_is_stored_as_u_fffd(
        settings: Settings, http_sink: HttpSink, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)  # printed lines are INFO records of `task.stdout`
    http_sink.script("/bin", [(200, {"Content-Type": "text/plain"}, b"head\x00tail")])
    (settings.workflows_dir / "nul_tasks.py").write_text(
        "import logging\n"
        "def noisy():\n"
        "    print('printed\\x00noise')\n"
        "    logging.getLogger('nul').warning('logged\\x00noise')\n"
        "    return {'text': 'a\\x00b', 'key\\x00': 1, 'literal': '\\\\u0000'}\n")
    write_workflow(settings, "nul.yaml", """
        name: nul
        inputs: {sink: {type: string}}
        steps:
          - id: fetch
            uses: http
            with: {url: "${{ inputs.sink }}/bin"}
          - id: task
            uses: python
            with: {function: "nul_tasks:noisy"}
        output:
          body: "${{ steps.fetch.output.text }}"
          task: "${{ steps.task.output }}"
        """)
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("nul", {"sink": http_sink.url})
        summary = await client.wait_for_run(run_id, timeout=30)
        assert summary.status.value == "completed", summary
        run = await client.get_run(run_id)
        assert run.output == {"body": "head\ufffdtail",
                                      "task": {"text": "a\ufffdb", "key\ufffd": 1, "literal": "\\u0000"}}
        async def logged() -> bool:  # step logs are written in batches
            logs = "\n".join(line.message for line in await client.step_logs(run_id, step_id="task"))
            return "printed\ufffdnoise" in logs and "logged\ufffdnoise" in logs

        await eventually(logged, timeout=15, what="the step's log lines")
