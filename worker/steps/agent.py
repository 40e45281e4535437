"""The `agent` step: an LLM with MCP tools, in a loop, every call a durable sub-step.

Call i of the loop (LLM turns and tool calls, in order) is looked up in the step's journal before
it is made: a committed entry is reused, otherwise the call is made with idempotency key
`ctx.key_for(i)` and committed before the loop goes on. After a crash the next attempt replays the
journal and resumes at the first uncommitted call, so no completed LLM or tool call is repeated.

Tools listed in `approve_tools` park the run for a human (`StepParked`, key `tool-<i>`); the next
attempt finds the decision in `ctx.decisions` and either makes the call or tells the model it was
refused.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

from worker.config import Settings
from worker.definitions.step_args import AgentArgs
from worker.errors import StepFailed, StepParked
from worker.steps.base import Journal, StepContext
from worker.steps.http_wire import validate_args
from worker.steps.llm import LlmClient, conversation, parse_structured, stop_list
from worker.steps.mcp_pool import McpPool, Resolved
from worker.steps.providers import ChatRequest, Message, ToolSpec
from worker.steps.tool import DEFAULT_TOOL_TIMEOUT, SharedTools, ToolExecutor

logger = logging.getLogger(__name__)

TOOL_TEXT_LIMIT = 32 * 1024  # of a tool result, as shown to the model


class _MemoryJournal:
    """Used when the engine gives no journal (direct calls): the loop works, without durability."""

    def __init__(self) -> None:
        self.entries: dict[int, Any] = {}

    async def record(self, call_index: int, data: Any) -> None:
        self.entries[call_index] = data


class AgentExecutor:
    """Runs `uses: agent` steps; shares the LLM client and the MCP pool with the llm and tool steps."""

    kind: ClassVar[str] = "agent"
    uses_journal: ClassVar[bool] = True

    def __init__(self, settings: Settings, llm: LlmClient | None = None, pool: McpPool | None = None,
                 shared: SharedTools | None = None) -> None:
        self._llm = llm or LlmClient(settings)
        self._pool = pool or McpPool(settings)
        self._owned = (llm is None, pool is None)
        self._tools = ToolExecutor(settings, self._pool, shared)

    async def aclose(self) -> None:
        if self._owned[0]:
            await self._llm.aclose()
        if self._owned[1]:
            await self._pool.aclose()

    async def _catalogue(self, spec: AgentArgs, ctx: StepContext) -> tuple[list[ToolSpec], dict[str, Resolved]]:
        tools: list[ToolSpec] = []
        where: dict[str, Resolved] = {}
        for ref in spec.servers:
            server = self._tools.resolve(ref, ctx)
            for tool in await self._pool.list_tools(server):
                if spec.tools is not None and tool.name not in spec.tools:
                    continue
                if tool.name in where:
                    ctx.logger.warning("agent %s: tool %s of %s hidden by the one of %s", ctx.step_id, tool.name,
                                       server.name, where[tool.name].name)
                    continue
                where[tool.name] = server
                tools.append(tool)
        return tools, where

    async def execute(self, args: dict[str, Any], ctx: StepContext) -> Any:
        spec = validate_args(AgentArgs, args, "agent")
        if not spec.pricing:
            spec = spec.model_copy(update={"pricing": self._tools.shared.pricing()})
        journal: Journal = ctx.journal if ctx.journal is not None else _MemoryJournal()
        tools, where = await self._catalogue(spec, ctx) if spec.servers else ([], {})
        messages: list[Message] = conversation(spec)
        transcript: list[dict[str, Any]] = [dict(m) for m in messages]
        usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
        cost: float | None = None
        index, turns, tool_calls = 0, 0, 0
        answer: str | None = None
        parsed: Any = None
        stop_reason = "max_turns"
        model = spec.model
        while turns < spec.max_turns:
            if spec.token_budget is not None and usage["total_tokens"] >= spec.token_budget:
                stop_reason = "token_budget"
                break
            entry = journal.entries.get(index)
            if entry is None:
                request = ChatRequest(model=spec.model, messages=messages, temperature=spec.temperature,
                                      max_tokens=spec.max_tokens, stop=stop_list(spec), tools=tools,
                                      schema=spec.schema_, idempotency_key=ctx.key_for(index))
                result = await self._llm.complete(spec, request, ctx, turn=turns)
                entry = {"type": "llm", "text": result["text"], "tool_calls": result["tool_calls"],
                         "finish_reason": result["finish_reason"], "usage": result["usage"],
                         "model": result["model"], "cost_usd": result["cost_usd"]}
                await journal.record(index, entry)
            _expect(entry, "llm", index)
            index += 1
            turns += 1
            model = entry.get("model") or model
            for k in usage:
                usage[k] += int(entry["usage"].get(k) or 0)
            if entry.get("cost_usd") is not None:
                cost = (cost or 0.0) + float(entry["cost_usd"])
            assistant = {"role": "assistant", "content": entry["text"], "tool_calls": entry["tool_calls"]}
            messages.append(assistant)
            transcript.append({**assistant, "usage": entry["usage"], "model": entry.get("model"),
                               "finish_reason": entry.get("finish_reason")})
            if not entry["tool_calls"]:
                if spec.schema_ is not None:
                    try:
                        parsed = parse_structured(entry["text"], spec.schema_)
                    except StepFailed as exc:
                        # tell the model and let it try again (the feedback is derived from the journal)
                        feedback = {"role": "user", "content": f"Your answer was rejected: {exc.reason}. "
                                                               "Answer again with JSON matching the schema."}
                        messages.append(feedback)
                        transcript.append(dict(feedback))
                        continue
                answer = entry["text"]
                stop_reason = "final_answer"
                break
            for call in entry["tool_calls"]:
                done = journal.entries.get(index)
                if done is None:
                    done = {"type": "tool", **await self._call_tool(spec, ctx, index, call, where)}
                    await journal.record(index, done)
                _expect(done, "tool", index)
                index += 1
                tool_calls += 1
                text = _tool_text(done)
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": text,
                                 "is_error": bool(done.get("isError"))})
                transcript.append({"role": "tool", "tool_call_id": call["id"], "name": call["name"],
                                   "arguments": call["arguments"], "content": text,
                                   "structuredContent": done.get("structuredContent"),
                                   "isError": bool(done.get("isError")), "approval": done.get("approval")})
        return {
            "answer": answer,
            "json": parsed,
            "stop_reason": stop_reason,
            "turns": turns,
            "tool_calls": tool_calls,
            "usage": usage,
            "cost_usd": None if cost is None else round(cost, 8),
            "model": model,
            "transcript": transcript,
        }

    async def _call_tool(self, spec: AgentArgs, ctx: StepContext, index: int, call: dict[str, Any],
                         where: dict[str, Resolved]) -> dict[str, Any]:
        name, arguments = call["name"], call["arguments"]
        server = where.get(name)
        if server is None:
            return {"isError": True, "text": f"there is no tool named {name!r}", "content": []}
        approval: dict[str, Any] | None = None
        if name in spec.approve_tools:
            key = f"tool-{index}"
            decision = ctx.decisions.get(key)
            if decision is None:
                raise StepParked(key, f"Agent step '{ctx.step_id}' wants to call {server.name}/{name} with "
                                      f"{_short(arguments)}. Allow it?",
                                 context={"tool": name, "server": server.name, "arguments": arguments},
                                 timeout=spec.approval_timeout, on_timeout="reject")
            approval = {"status": decision.get("status"), "by": decision.get("by"), "reason": decision.get("reason")}
            if decision.get("status") != "approved":
                if decision.get("status") == "timed_out":
                    why = "nobody approved it in time"
                else:
                    who, said = decision.get("by") or "a human", decision.get("reason") or "no reason given"
                    why = f"{who} rejected it: {said}"
                return {"isError": True, "text": f"The call to {name} was not made: {why}.", "content": [],
                        "approval": approval}
        timeout = spec.tool_timeout or server.spec.timeout or DEFAULT_TOOL_TIMEOUT
        result = await self._pool.call(server, name, arguments, key=ctx.key_for(index), seconds=timeout,
                                       traceparent=ctx.traceparent)
        if approval is not None:
            result["approval"] = approval
        return result


def _expect(entry: Any, kind: str, index: int) -> None:
    """A journal that does not match the loop's replay (it cannot, with pinned inputs) is not guessed at."""
    if not isinstance(entry, dict) or entry.get("type") != kind:
        found = entry.get("type") if isinstance(entry, dict) else type(entry).__name__
        raise StepFailed(f"agent journal entry {index} is a {found!r} call where the loop expects {kind!r}: "
                         "the step's recorded history does not match its definition", retryable=False)


def _tool_text(entry: dict[str, Any]) -> str:
    text = entry.get("text") or ""
    if not text and entry.get("structuredContent") is not None:
        text = json.dumps(entry["structuredContent"])
    if not text and entry.get("content"):
        text = json.dumps(entry["content"])
    return text[:TOOL_TEXT_LIMIT]


def _short(value: Any, limit: int = 300) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"
