"""The `llm` step: one chat completion (OpenAI-compatible APIs or Anthropic), over httpx.

`LlmClient` is shared with the `agent` step: it resolves the base URL and the API key, checks the
URL against the egress policy (`worker.egress`), sends one request with the step's idempotency key and
classifies failures (429/5xx/timeouts are retryable, honouring Retry-After). Requests stream by default
(worker/steps/llm_stream.py): the pieces of the answer go to the run's live stream (worker/streams) as they
arrive, and the result is assembled exactly as the plain call's would be; a peer that cannot stream gets the
plain call. Each call is a GenAI client span (`chat MODEL`). Environment variables are
read only through the policy (names the operator allows), and a key read from the environment is sent
only to its provider's own host or to hosts the operator lists; redirects are never followed. When limits
apply (`limit:` or a `match:` of limits.yaml) each request goes through the step's gate (worker/limits).
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx
import jsonschema

from worker.config import Settings
from worker.definitions.step_args import LlmArgs
from worker.egress.policy import EgressPolicy
from worker.errors import StepFailed
from worker.limits.provider import DEFAULT_OUTPUT_TOKENS, estimate_tokens, observe
from worker.steps.base import StepContext
from worker.steps.http_wire import USER_AGENT, parse_retry_after, validate_args
from worker.steps.llm_stream import (
    AttemptFigures,
    CallTiming,
    LlmCall,
    NoStream,
    chat_attributes,
    record,
    result_attributes,
    stream_call,
    whole_answer,
)
from worker.steps.providers import ChatRequest, MalformedResponse, Message, Provider, get_provider
from worker.steps.tool import SharedTools
from worker.streams.entries import LiveConfig
from worker.streams.publisher import LivePublisher
from worker.telemetry.child import achild_span, span_traceparent

DEFAULT_TIMEOUT = 120.0
MAX_LIMITED_429 = 5
"""429s in a row a limited call waits through before its attempt fails."""
EXCERPT_CHARS = 300
MAX_RESPONSE_BYTES = 16 * 1024 * 1024


class LlmClient:
    """One pooled httpx client for every LLM call of a worker; `live` publishes the calls' deltas (a worker's
    client has one; without it calls still stream, but nothing is published)."""

    def __init__(self, settings: Settings, live: LivePublisher | None = None) -> None:
        self.policy = EgressPolicy.from_settings(settings)
        # trust_env=False: proxy variables and ~/.netrc never apply to user-chosen URLs.
        self._client = httpx.AsyncClient(trust_env=False, follow_redirects=False,
                                         headers={"User-Agent": USER_AGENT}, timeout=DEFAULT_TIMEOUT)
        self.live = live
        self._streaming = (live.config if live is not None else LiveConfig.from_env()).enabled
        self._no_stream: set[tuple[str, str]] = set()  # (url, model) that refused to stream: plain calls
        self._attempts = AttemptFigures()

    async def aclose(self) -> None:
        await self._client.aclose()
        if self.live is not None:
            await self.live.aclose()

    async def complete(self, spec: LlmArgs, request: ChatRequest, ctx: StepContext, *,
                       turn: int = 0) -> dict[str, Any]:
        """Send one request; the normalized completion, with `usage`, `model` and `cost_usd`. `turn` numbers an
        agent's LLM turns (0 for an `llm` step) on the live channel."""
        provider = get_provider(spec.provider)
        base = base_url(spec, provider.default_base_url, self.policy)
        wire = provider.build(request)
        url = base.rstrip("/") + wire.path
        headers = {**wire.headers, **spec.headers}
        key = api_key(spec, ctx, self.policy)
        if key and not spec.credential and spec.api_key_env:
            self.policy.check_key_destination(url, spec.api_key_env, provider.name, provider.key_hosts)
        if key:
            headers.update(provider.auth_headers(key, spec.api_key_header))
        await self.policy.check(url)
        streams = spec.stream and self._streaming and (url, request.model) not in self._no_stream
        env_key = {"env": {spec.api_key_env: key}} if key and spec.api_key_env and not spec.credential else None
        live = self.live.call(ctx, turn=turn, extra_secrets=env_key) if streams and self.live is not None else None
        call = LlmCall(streams, live, CallTiming())
        async with achild_span(ctx.traceparent, f"chat {request.model}", chat_attributes(provider, request, url, turn),
                               kind="client", record_exception=False) as span:
            if ctx.traceparent:
                headers.setdefault("traceparent", span_traceparent(span) or ctx.traceparent)
            try:
                result = await self._gated(spec, request, ctx, provider, url, wire.body, headers,
                                           sent_key=key is not None, call=call)
            except StepFailed as failure:
                # A peer that echoes an environment key in its error must not put it in the event log (a Vault
                # credential's value is redacted by the engine, which knows it).
                redacted = failure
                if key and spec.api_key_env and not spec.credential and len(key) >= 4 and key in failure.reason:
                    redacted = StepFailed(failure.reason.replace(key, f"[redacted:{spec.api_key_env}]"),
                                          retryable=failure.retryable, retry_after=failure.retry_after)
                if call.live is not None:
                    call.live.abandon(redacted.reason)
                record(span, {"error.type": str(redacted.status or "StepFailed")})
                if redacted is not failure:
                    raise redacted from None
                raise
            except BaseException:
                if call.live is not None:
                    call.live.abandon("interrupted (the attempt was cancelled or timed out)")
                raise
            self._observe(ctx, span, result, call)
        if call.live is not None and self.live is not None:
            await self.live.settle()  # bounded: readers that see the step complete find its last deltas
        return result

    def _observe(self, ctx: StepContext, span: Any, result: dict[str, Any], call: LlmCall) -> None:
        """The call's figures: on its span, on its live stream's `llm.done`, and (summed over the attempt's
        calls) on the attempt's and the step's spans (worker/telemetry)."""
        attrs = result_attributes(result, call.timing)
        record(span, attrs)
        output = int(attrs["gen_ai.usage.output_tokens"])
        if call.live is not None:
            if not call.timing.streamed:  # the peer answered in one piece: so does the live channel
                call.live.add(whole_answer(result))
            call.live.done(finish_reason=result.get("finish_reason"), output_tokens=output,
                           tokens_per_s=attrs.get("agentrt.llm.output_tokens_per_s"))
        from worker.telemetry.current import current

        telemetry = current()
        if telemetry is not None and call.timing.streamed:
            step = self._attempts.add((str(ctx.run_id), ctx.step_id, ctx.item, ctx.attempt), call.timing, output)
            telemetry.annotate_attempt(str(ctx.run_id), ctx.step_id, ctx.item, ctx.attempt, step)

    async def _gated(self, spec: LlmArgs, request: ChatRequest, ctx: StepContext, provider: Provider, url: str,
                     body: dict[str, Any], headers: dict[str, str], *, sent_key: bool, call: LlmCall) -> dict[str, Any]:
        """One request through the step's gate (worker/limits): the limits it obeys admit it with its expected
        tokens reserved (or the step waits: StepThrottled), and it is settled with the real usage and what the
        provider's headers say. A 429 on a limited call is waiting, not failing: the limit is tightened and the
        call asks again (at most MAX_LIMITED_429 times in a row)."""
        gate = ctx.gate
        if gate is None or not gate.matters:
            return await self._send(spec, request, ctx, provider, url, body, headers, sent_key=sent_key, call=call)
        tokens = estimate_tokens(request)
        price = spec.pricing.get(request.model)
        output = request.max_tokens if request.max_tokens is not None else DEFAULT_OUTPUT_TOKENS
        cost = None if price is None else ((tokens - output) * price.input + output * price.output) / 1e6
        call_key = request.idempotency_key or ctx.key_for(0)
        for _ in range(MAX_LIMITED_429):
            permit = await gate.before_llm(call_key=call_key, provider=provider.name, model=request.model,
                                           host=httpx.URL(url).host, tokens=tokens, cost_usd=cost)
            if permit is None:
                try:
                    result = await self._send(spec, request, ctx, provider, url, body, headers, sent_key=sent_key,
                                              call=call)
                except Exception:
                    await gate.after_llm(call_key, 0, 0.0)
                    raise
                await gate.after_llm(call_key, int(result["usage"]["total_tokens"]), result.get("cost_usd"))
                return result
            seen: list[httpx.Response] = []
            try:
                result = await self._send(spec, request, ctx, provider, url, body, headers, sent_key=sent_key,
                                          call=call, seen=seen)
            except StepFailed as failure:
                await gate.after_llm(call_key, 0, 0.0)
                said = observe(seen[-1].headers, datetime.now(UTC)) if seen else None
                await permit.done(observation=said, status=failure.status, wait=failure.status == 429)
                if failure.status != 429:
                    raise
                ctx.logger.info("llm %s: 429 under limit(s) %s; waiting for the tightened limit", provider.name,
                                ", ".join(permit.limits))
                continue
            except BaseException:
                await permit.done()
                raise
            said = observe(seen[-1].headers, datetime.now(UTC)) if seen else None
            await permit.done(used_tokens=int(result["usage"]["total_tokens"]), observation=said, status=200)
            await gate.after_llm(call_key, int(result["usage"]["total_tokens"]), result.get("cost_usd"))
            return result
        raise StepFailed(f"{provider.name}: HTTP 429 {MAX_LIMITED_429} times in a row from POST {_safe(url)} although "
                         "the limits let each call go", retryable=True, status=429)

    async def _send(self, spec: LlmArgs, request: ChatRequest, ctx: StepContext, provider: Provider, url: str,
                    body: dict[str, Any], headers: dict[str, str], *, sent_key: bool, call: LlmCall,
                    seen: list[httpx.Response] | None = None) -> dict[str, Any]:
        timeout = spec.timeout or ctx.timeout or DEFAULT_TIMEOUT
        started = call.timing.started = time.monotonic()
        if call.live is not None:
            call.live.restart_clock()
        answer: dict[str, Any] | httpx.Response | None = None
        if call.stream and (url, request.model) not in self._no_stream:
            try:
                answer = await stream_call(self._client, provider, url, _safe(url), body, headers, spec.query or None,
                                           timeout, cap=MAX_RESPONSE_BYTES, live=call.live, timing=call.timing,
                                           seen=seen)
            except NoStream as exc:
                if len(self._no_stream) < 1000:
                    self._no_stream.add((url, request.model))
                ctx.logger.info("llm %s %s: %s to a streaming request; plain calls to it from now on", provider.name,
                                _safe(url), exc)
                if seen:
                    seen.pop()
        if answer is None:
            try:
                answer = await self._client.post(url, json=body, headers=headers, params=spec.query or None,
                                                 timeout=httpx.Timeout(timeout))
            except httpx.TimeoutException as exc:
                raise StepFailed(f"{provider.name}: timed out after {timeout:g}s (POST {_safe(url)})",
                                 retryable=True) from exc
            except httpx.TransportError as exc:
                raise StepFailed(f"{provider.name}: cannot reach {_safe(url)}: {type(exc).__name__}: {exc}",
                                 retryable=True) from exc
            if seen is not None:
                seen.append(answer)
        if isinstance(answer, httpx.Response):
            response = answer
            ctx.logger.debug("llm %s %s -> %d in %.0fms", provider.name, _safe(url), response.status_code,
                             (time.monotonic() - started) * 1000)
            if len(response.content) > MAX_RESPONSE_BYTES:
                raise StepFailed(f"{provider.name}: response larger than {MAX_RESPONSE_BYTES} bytes", retryable=False)
            if response.status_code >= 300:
                raise _status_failure(provider.name, url, response, spec, sent_key=sent_key)
            try:
                answer = response.json()
            except ValueError as exc:
                raise StepFailed(f"{provider.name}: malformed JSON in the response: "
                                 f"{response.text[:EXCERPT_CHARS]!r}", retryable=True) from exc
        else:
            ctx.logger.debug("llm %s %s -> streamed in %.0fms (first piece after %sms)", provider.name, _safe(url),
                             (time.monotonic() - started) * 1000, call.timing.ttft_ms)
        try:
            result = provider.parse(answer)
        except MalformedResponse as exc:
            raise StepFailed(f"{provider.name}: {exc}", retryable=True) from exc
        result["model"] = result.get("model") or request.model
        result["provider"] = provider.name
        result["cost_usd"] = cost_of(spec, request.model, result)
        return result


def api_key(spec: LlmArgs, ctx: StepContext, policy: EgressPolicy) -> str | None:
    """The key from the named credential (Vault), else the named environment variable (if the policy lets
    workflows read it), else None."""
    if spec.credential:
        values = ctx.secrets.get(spec.credential)
        if not values:
            raise StepFailed(f"credential {spec.credential!r} is not available to this step "
                             "(list it under the step's secrets:)", retryable=False)
        for name in ("api_key", "key", "token"):
            if values.get(name):
                return str(values[name])
        if len(values) == 1:
            return str(next(iter(values.values())))
        raise StepFailed(f"credential {spec.credential!r} has no api_key", retryable=False)
    if spec.api_key_env:
        return policy.read_env(spec.api_key_env, "api_key_env")
    return None


def base_url(spec: LlmArgs, default: str, policy: EgressPolicy) -> str:
    """`base_url_env`'s value when it is set (it must hold an http(s) URL), else `base_url`, else the default."""
    if spec.base_url_env:
        value = policy.read_env(spec.base_url_env, "base_url_env")
        if value:
            if not value.lower().startswith(("http://", "https://")):
                # the value is not quoted: a variable that holds something else may hold a secret
                raise StepFailed(f"base_url_env: {spec.base_url_env} does not hold an http(s) URL", retryable=False)
            return value
    return spec.base_url or default


def cost_of(spec: LlmArgs, requested: str, result: dict[str, Any]) -> float | None:
    # the model that answered (an alias such as gpt-4o resolves to a dated model) else the one asked for
    price = spec.pricing.get(str(result.get("model"))) or spec.pricing.get(requested)
    if price is None:
        return None
    usage = result["usage"]
    return round(usage["input_tokens"] * price.input / 1e6 + usage["output_tokens"] * price.output / 1e6, 8)


def _safe(url: str) -> str:
    return str(httpx.URL(url).copy_with(query=None, fragment=None, username=None, password=None))


def _status_failure(provider: str, url: str, response: httpx.Response, spec: LlmArgs, *,
                    sent_key: bool) -> StepFailed:
    status = response.status_code
    reason = f"{provider}: HTTP {status} from POST {_safe(url)}"
    excerpt = response.text[:EXCERPT_CHARS].strip()
    if excerpt:
        reason += f": {excerpt}"
    if status in (401, 403) and not sent_key:
        where = spec.api_key_env or "api_key_env / credential"
        reason += f" (no API key was sent: set {where})"
    if status in (408, 409, 429) or status >= 500:
        return StepFailed(reason, retryable=True, retry_after=parse_retry_after(response.headers.get("retry-after")),
                          status=status)
    return StepFailed(reason, retryable=False, status=status)


def conversation(spec: LlmArgs) -> list[Message]:
    messages: list[Message] = []
    if spec.system:
        messages.append({"role": "system", "content": spec.system})
    messages += [{"role": m.role, "content": m.content} for m in spec.messages]
    if spec.prompt is not None:
        messages.append({"role": "user", "content": spec.prompt})
    return messages


def stop_list(spec: LlmArgs) -> list[str]:
    if spec.stop is None:
        return []
    return [spec.stop] if isinstance(spec.stop, str) else list(spec.stop)


def parse_structured(text: str, schema: dict[str, Any]) -> Any:
    """The JSON answer, validated against `schema`; a mismatch is a retryable failure naming the problem."""
    raw = text.strip()
    if raw.startswith("```"):  # a fenced block: ```json ... ```
        raw = raw.split("\n", 1)[1] if "\n" in raw else ""
        raw = raw.rsplit("```", 1)[0]
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise StepFailed(f"structured output is not JSON ({exc.msg} at {exc.pos}): {text[:EXCERPT_CHARS]!r}",
                         retryable=True) from exc
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if errors:
        problems = "; ".join(f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                             for e in errors[:5])
        raise StepFailed(f"structured output does not match the schema: {problems}", retryable=True)
    return value


class LlmExecutor:
    """Runs `uses: llm` steps."""

    kind: ClassVar[str] = "llm"

    def __init__(self, settings: Settings, client: LlmClient | None = None, *, owns_client: bool | None = None,
                 shared: SharedTools | None = None) -> None:
        self._client = client or LlmClient(settings)
        self._owns_client = client is None if owns_client is None else owns_client
        self._shared = shared or SharedTools(settings.workflows_dir)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def execute(self, args: dict[str, Any], ctx: StepContext) -> Any:
        spec = validate_args(LlmArgs, args, "llm")
        if not spec.pricing:
            spec = spec.model_copy(update={"pricing": self._shared.pricing()})
        if spec.schema_ is not None:
            try:
                jsonschema.Draft202012Validator.check_schema(spec.schema_)
            except jsonschema.SchemaError as exc:
                raise StepFailed(f"invalid llm step arguments: schema: {exc.message}", retryable=False) from exc
        request = ChatRequest(model=spec.model, messages=conversation(spec), temperature=spec.temperature,
                              max_tokens=spec.max_tokens, stop=stop_list(spec), schema=spec.schema_,
                              idempotency_key=ctx.key_for(0))
        result = await self._client.complete(spec, request, ctx)
        output: dict[str, Any] = {
            "text": result["text"],
            "json": None,
            "finish_reason": result["finish_reason"],
            "usage": result["usage"],
            "model": result["model"],
            "provider": result["provider"],
            "cost_usd": result["cost_usd"],
        }
        if result["tool_calls"]:
            output["tool_calls"] = result["tool_calls"]
        if spec.schema_ is not None:
            output["json"] = parse_structured(result["text"], spec.schema_)
        return output
