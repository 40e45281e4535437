"""Live LLM output: what `llm` and `agent` steps are writing, as it is written (issue 19).

Providers are called with streaming on (worker/steps/llm_stream.py); the pieces of the answer go, coalesced,
to a per-run Redis stream (`Keys.live(run_id)`: bounded by MAXLEN, expiring after a TTL), never to Postgres.
The committed step output is the same as without streaming.

- `entries`: the entry types (`llm.delta`, `llm.done`, `llm.abandoned`), their encoding, `LiveConfig`.
- `publisher`: `LivePublisher`, a worker's background writer (steps never wait on Redis).
- `call`: `LiveCall`, one call's coalescing, redacting writer.
- `fold`: `LiveText`, the reader's fold: text and tool calls per call, abandoned partials marked.
- `cli`: `agentrt tail`.

Readers use `RuntimeClient.live_entries` / `follow_live` (worker/client/live.py) and the HTTP API's
`GET /v1/runs/{id}/events` (worker/api/streams.py).
"""
