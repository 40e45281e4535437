"""Outside events: `agentrt send-event` and `agentrt waits` (the runtime side is worker/client/events.py
and worker/store/waits.py; the HTTP side is `POST /v1/events` in worker/api)."""
