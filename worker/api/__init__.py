"""The HTTP API (`agentrt serve`): runs, approvals, events and webhooks over JSON, for services and scripts.

Stateless: any number of API processes behind a load balancer, each reaching the runtime only through
`worker.client.RuntimeClient` (Postgres and Redis), like the CLI and the console.
"""
