#!/bin/sh
# Container entrypoint: `agentrt "$@"` with credentials taken from the compose volumes.
#
# - /run/agentrt/credentials/{database_url,redis_url}: written by the `credentials` job; used
#   unless AGENTRT_DATABASE_URL / AGENTRT_REDIS_URL are already set.
# - /run/agentrt/approle/role_id and secret_id.wrapped: written by `vault-init`. A worker claims the
#   response-wrapped secret id by renaming it (atomic: two replicas never get the same one), so the
#   file is gone from the volume before the worker uses it; vault-init issues the next one. The worker
#   unwraps it once (wrapping tokens are single use: a second unwrap is refused and logged by Vault).
#   `serve` (the HTTP API) claims one the same way: it reads webhook secrets with child tokens scoped
#   to the workflow's own policy (worker/client/webhooks.py).
set -eu

creds=/run/agentrt/credentials
approle=/run/agentrt/approle

if [ -z "${AGENTRT_DATABASE_URL:-}" ] && [ -r "$creds/database_url" ]; then
    AGENTRT_DATABASE_URL=$(cat "$creds/database_url"); export AGENTRT_DATABASE_URL
fi
if [ -z "${AGENTRT_REDIS_URL:-}" ] && [ -r "$creds/redis_url" ]; then
    AGENTRT_REDIS_URL=$(cat "$creds/redis_url"); export AGENTRT_REDIS_URL
fi

if { [ "${1:-}" = "worker" ] || [ "${1:-}" = "serve" ]; } && [ -n "${VAULT_ADDR:-}" ] && [ -z "${VAULT_TOKEN:-}" ] \
        && [ -z "${AGENTRT_VAULT_SECRET_ID:-}" ] && [ -d "$approle" ]; then
    mine="$approle/claimed.$(hostname).$$"
    waited=0
    until [ -s "$approle/role_id" ] && mv "$approle/secret_id.wrapped" "$mine" 2>/dev/null; do
        if [ "$waited" -ge 120 ]; then
            echo "entrypoint: no wrapped AppRole secret id in $approle after 60s; is vault-init running?" >&2
            exit 78
        fi
        waited=$((waited + 1))
        sleep 0.5
    done
    AGENTRT_VAULT_ROLE_ID=$(cat "$approle/role_id")
    AGENTRT_VAULT_SECRET_ID=$(cat "$mine")
    rm -f "$mine"
    export AGENTRT_VAULT_ROLE_ID AGENTRT_VAULT_SECRET_ID
fi

exec agentrt "$@"
