from tests.worker.e2e.test_agent_e2e import *
from tests.worker.e2e.test_agent_e2e import _refund_then_answer, _agent_workflow
async def test_dbg(settings, peer, tmp_path):
    log = tmp_path / "calls.jsonl"
    peer.responder = _refund_then_answer
    _agent_workflow(settings, log, extra="approve_tools: [refund]")
    print((settings.workflows_dir / "support.yaml").read_text())
    async with running_worker(settings), client_for(settings) as client:
        run_id = await client.start_run("support", {"llm": peer.openai_url})
        await asyncio.sleep(5)
        d = await client.get_run(run_id)
        for e in d.events: print(e.type, e.step_id, e.data)
        print(await client.list_tasks(status=None))
