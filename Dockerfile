# syntax=docker/dockerfile:1
# AgentRuntime: one image for the worker, migrations, the console and the compose stack's init jobs.
# Small: a slim Python base, wheels only (no compiler), a second stage without pip's build leftovers.
# Built by `docker compose build`; see README, Production.

ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY worker ./worker
COPY console ./console
RUN pip install --prefix=/install .

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agentruntime" \
      org.opencontainers.image.description="Durable runtime for AI-agent workflows, and its console"
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    AGENTRT_WORKFLOWS_DIR=/srv/workflows
RUN groupadd --system --gid 10001 agentrt \
 && useradd --system --uid 10001 --gid agentrt --home-dir /app --no-create-home --shell /usr/sbin/nologin agentrt
COPY --from=build /install /usr/local
COPY --chmod=0755 deploy/entrypoint.sh /app/deploy/entrypoint.sh
COPY deploy/vault_init.py deploy/gen_credentials.py /app/deploy/
COPY workflows /srv/workflows
# Mount points of the compose volumes: a fresh named volume takes this ownership.
RUN mkdir -p /run/agentrt/approle /run/agentrt/credentials /var/lib/agentrt/vault-init \
 && chown -R agentrt:agentrt /run/agentrt /var/lib/agentrt \
 && chmod 0700 /var/lib/agentrt/vault-init
USER agentrt:agentrt
WORKDIR /app
ENTRYPOINT ["/app/deploy/entrypoint.sh"]
CMD ["worker"]
