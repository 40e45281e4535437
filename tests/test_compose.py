"""The production stack's files: docker-compose.yml checked structurally (no Docker engine on these
machines), the Dockerfile's essentials, and the init scripts run for real (OpenBao from its wheel)."""

from __future__ import annotations

import ast
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.support.services import REPO_ROOT
from worker.devstack._process import free_port, port_accepts
from worker.devstack.openbao import bao_bin

COMPOSE = REPO_ROOT / "docker-compose.yml"
DEPLOY = REPO_ROOT / "deploy"

# OpenTelemetry's own variables (SDK configuration and OTLP exporter specifications).
OTEL_STANDARD = {
    "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_LOG_LEVEL", "OTEL_PROPAGATORS",
    "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
    "OTEL_LOGS_EXPORTER", "OTEL_BSP_SCHEDULE_DELAY", "OTEL_BSP_EXPORT_TIMEOUT", "OTEL_BSP_MAX_QUEUE_SIZE",
    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT",
    "OTEL_SPAN_EVENT_COUNT_LIMIT", "OTEL_SPAN_LINK_COUNT_LIMIT",
    *(f"OTEL_EXPORTER_OTLP{signal}_{name}" for signal in ("", "_TRACES", "_METRICS", "_LOGS")
      for name in ("ENDPOINT", "PROTOCOL", "HEADERS", "TIMEOUT", "COMPRESSION", "INSECURE", "CERTIFICATE",
                   "CLIENT_KEY", "CLIENT_CERTIFICATE")),
}
ONE_SHOT = {"credentials", "migrate", "console"}
LONG_RUNNING = {"postgres", "redis", "openbao", "vault-init", "jaeger", "worker", "api"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def config_env_names() -> set[str]:
    """Every AGENTRT_* / VAULT_* name that worker/config.py reads (string constants in its source)."""
    tree = ast.parse((REPO_ROOT / "worker" / "config.py").read_text(encoding="utf-8"))
    names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
             and re.fullmatch(r"(AGENTRT|VAULT)_[A-Z0-9_]+", n.value)}
    assert {"AGENTRT_DATABASE_URL", "AGENTRT_REDIS_URL", "VAULT_ADDR"} <= names  # the parse found something
    return names


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def test_services_and_images_are_pinned(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == ONE_SHOT | LONG_RUNNING
    for name, svc in services.items():
        image = svc.get("image")
        assert image, f"{name}: no image (a built service must still name and tag its image)"
        repo, _, tag = image.rpartition(":")
        assert repo and "/" not in tag and tag not in ("", "latest"), f"{name}: image {image!r} is not pinned"
        assert "env_file" not in svc, f"{name}: secrets must not come from env files"
    built = {n for n, s in services.items() if "build" in s}
    assert built == {"credentials", "migrate", "worker", "api", "console", "vault-init"}
    assert len({services[n]["image"] for n in built}) == 1  # one project image
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["migrate"]["command"] == ["migrate"]
    assert services["console"]["command"] == ["console"]
    assert services["api"]["command"][:3] == ["serve", "--host", "0.0.0.0"]
    assert services["api"]["ports"] == ["127.0.0.1:8421:8421"]  # loopback only: TLS goes in front
    assert services["console"]["profiles"] == ["tools"] and services["console"]["tty"] is True
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    assert "jaeger" in services["jaeger"]["image"] and services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"]
    assert "openbao" in services["openbao"]["image"]


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        if name in LONG_RUNNING:
            check = svc.get("healthcheck")
            assert check and check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), name
            assert svc.get("restart") == "unless-stopped", name
        else:
            assert svc.get("restart") == "no", name
    # the worker's grace period on SIGTERM must fit in docker's stop timeout (the service stops after 10s)
    assert compose["services"]["worker"]["stop_grace_period"] == "30s"


def test_depends_on_use_conditions_that_exist(compose: dict[str, Any]) -> None:
    services = compose["services"]
    allowed = {"service_started", "service_healthy", "service_completed_successfully"}
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must be a mapping with conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert spec["condition"] in allowed
            if dep in ONE_SHOT:
                assert spec["condition"] == "service_completed_successfully", (name, dep)
            elif "healthcheck" in services[dep] and dep != "jaeger":
                assert spec["condition"] == "service_healthy", (name, dep)
    worker = services["worker"]["depends_on"]
    assert {"migrate", "redis", "vault-init"} <= set(worker)
    assert services["vault-init"]["depends_on"] == {"openbao": {"condition": "service_healthy"}}


def test_environment_uses_only_variables_the_cli_reads(compose: dict[str, Any]) -> None:
    known = config_env_names()
    for name, svc in compose["services"].items():
        for var in _env(svc):
            if var.startswith(("AGENTRT_", "VAULT_")):
                assert var in known, f"{name}: {var} is not read by worker/config.py"
            elif var.startswith("OTEL_"):
                assert var in OTEL_STANDARD, f"{name}: {var} is not an OpenTelemetry variable"
            assert not re.search(r"PASSWORD$|TOKEN$|SECRET_ID$", var), f"{name}: secret {var} in the compose file"
    worker = _env(compose["services"]["worker"])
    assert worker["VAULT_ADDR"] == "http://openbao:8200"
    assert worker["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    assert worker["AGENTRT_WORKFLOWS_DIR"] == "/srv/workflows"
    assert {"AGENTRT_DB_POOL_SIZE", "AGENTRT_CONCURRENCY", "AGENTRT_LEASE_TTL"} <= set(worker)
    # the database and Redis URLs (they hold passwords) come from the credentials volume, never from here
    for svc in compose["services"].values():
        assert "AGENTRT_DATABASE_URL" not in _env(svc) and "AGENTRT_REDIS_URL" not in _env(svc)
    # what the entrypoint exports is read by the CLI, too
    exported = set(re.findall(r"export ((?:[A-Z_]+ ?)+)", (DEPLOY / "entrypoint.sh").read_text()))
    assert {v for group in exported for v in group.split()} <= known


def test_data_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    declared = set(compose["volumes"])
    mounts = {name: [str(v).split(":") for v in svc.get("volumes", [])] for name, svc in compose["services"].items()}
    for name, vols in mounts.items():
        for parts in vols:
            if not parts[0].startswith("."):
                assert parts[0] in declared, f"{name}: volume {parts[0]} is not declared"
    assert ["pgdata", "/var/lib/postgresql/data"] in mounts["postgres"]
    assert ["redisdata", "/data"] in mounts["redis"]
    assert ["openbao-data", "/openbao/file"] in mounts["openbao"]
    # the AppRole volume: written by vault-init, claimed by workers and the API (webhook secrets), seen by
    # nobody else
    with_approle = {n for n, vols in mounts.items() if any(p[0] == "approle" for p in vols)}
    assert with_approle == {"vault-init", "worker", "api"}
    with_init_state = {n for n, vols in mounts.items() if any(p[0] == "vault-init" for p in vols)}
    assert with_init_state == {"vault-init"}  # unseal key and root token
    for name in ("postgres", "redis", "migrate", "worker", "console"):
        assert ["credentials", "/run/agentrt/credentials", "ro"] in mounts[name], name
    assert ["./deploy/openbao/bao.hcl", "/openbao/config/bao.hcl", "ro"] in mounts["openbao"]
    assert (REPO_ROOT / "deploy" / "openbao" / "bao.hcl").is_file()


def test_dockerfile_is_small_pinned_and_non_root() -> None:
    text = (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8")
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", base.group(1))
    assert all(line.split()[1] == "${PYTHON_IMAGE}" for line in text.splitlines() if line.startswith("FROM "))
    assert "RUN pip install --prefix=/install ." in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["/app/deploy/entrypoint.sh"\]$', text, re.M)
    for src in re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", text, re.M):
        for path in src.split():
            assert (REPO_ROOT / path).exists(), f"Dockerfile copies missing {path}"
    ignored = (REPO_ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".venv", ".git", "tests", ".agentrt"} <= set(ignored)


def test_entrypoint_is_valid_posix_shell() -> None:
    path = DEPLOY / "entrypoint.sh"
    assert path.stat().st_mode & stat.S_IXUSR
    subprocess.run(["sh", "-n", str(path)], check=True)


def test_credentials_job_is_idempotent(tmp_path: Path) -> None:
    run = [sys.executable, str(DEPLOY / "gen_credentials.py"), "--dir", str(tmp_path)]
    subprocess.run(run, check=True, capture_output=True)
    first = {p.name: p.read_text() for p in tmp_path.iterdir()}
    subprocess.run(run, check=True, capture_output=True)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == first
    assert set(first) == {"postgres_password", "redis_password", "database_url", "redis_url"}
    pw = first["postgres_password"].strip()
    assert len(pw) >= 40 and first["database_url"].strip() == f"postgresql://agentrt:{pw}@postgres:5432/agentrt"
    assert first["redis_url"].strip() == f"redis://:{first['redis_password'].strip()}@redis:6379/0"


# -- vault-init against a real, sealed OpenBao (not dev mode) ------------------------------------------------
@pytest.fixture
def sealed_openbao(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    port = free_port()
    config = tmp_path / "bao.hcl"
    (tmp_path / "data").mkdir()
    config.write_text(
        f'api_addr = "http://127.0.0.1:{port}"\ncluster_addr = "http://127.0.0.1:{free_port()}"\n'
        f'storage "raft" {{\n path = "{tmp_path / "data"}"\n node_id = "n1"\n}}\n'
        f'listener "tcp" {{ address = "127.0.0.1:{port}"\n tls_disable = true }}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    log = (tmp_path / "bao.log").open("wb")

    def start() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([str(bao_bin()), "server", f"-config={config}"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not port_accepts(port):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "bao.log").read_text()
            time.sleep(0.1)
        return proc

    proc = start()
    holder = [proc]
    try:
        yield f"http://127.0.0.1:{port}", tmp_path, holder  # type: ignore[misc]
    finally:
        for p in holder:
            p.terminate()
            p.wait(10)
        log.close()


def _vault_init(addr: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "AGENTRT_"))}
    env.update(VAULT_ADDR=addr, AGENTRT_WORKFLOWS_DIR=str(REPO_ROOT / "workflows"), PYTHONPATH=str(REPO_ROOT),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    return subprocess.run([sys.executable, str(DEPLOY / "vault_init.py"), "--state-dir", str(root / "state"),
                           "--approle-dir", str(root / "approle"), "--setup-only"],
                          env=env, capture_output=True, text=True, timeout=120, check=False)


def test_vault_init_initialises_unseals_configures_and_issues_wrapped_secret_ids(sealed_openbao) -> None:  # type: ignore[no-untyped-def]
    addr, root, holder = sealed_openbao
    health = httpx.get(f"{addr}/v1/sys/health", timeout=5)
    assert health.status_code == 501  # not initialised
    done = _vault_init(addr, root)
    assert done.returncode == 0, done.stderr
    state = root / "state" / "init.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    token = json.loads(state.read_text())["root_token"]
    assert httpx.get(f"{addr}/v1/sys/health", timeout=5).status_code == 200  # unsealed and active
    h = {"X-Vault-Token": token}
    mounts = httpx.get(f"{addr}/v1/sys/mounts", headers=h, timeout=5).json()["data"]
    assert mounts["secret/"]["type"] == "kv" and mounts["secret/"]["options"]["version"] == "2"
    assert mounts["transit/"]["type"] == "transit"
    assert "approle/" in httpx.get(f"{addr}/v1/sys/auth", headers=h, timeout=5).json()["data"]
    policies = httpx.get(f"{addr}/v1/sys/policies/acl?list=true", headers=h, timeout=5).json()["data"]["keys"]
    assert "agentrt-worker" in policies  # written by `agentrt vault policies --apply`

    # a worker's start: claim the wrapped secret id, unwrap it once, log in with AppRole
    role_id = (root / "approle" / "role_id").read_text()
    wrapped = (root / "approle" / "secret_id.wrapped").read_text()
    unwrapped = httpx.post(f"{addr}/v1/sys/wrapping/unwrap", headers={"X-Vault-Token": wrapped}, timeout=5)
    secret_id = unwrapped.json()["data"]["secret_id"]
    again = httpx.post(f"{addr}/v1/sys/wrapping/unwrap", headers={"X-Vault-Token": wrapped}, timeout=5)
    assert again.status_code >= 400  # single use: a stolen copy is detected
    login = httpx.post(f"{addr}/v1/auth/approle/login", json={"role_id": role_id, "secret_id": secret_id},
                       timeout=5).json()["auth"]
    assert login["token_policies"] == ["agentrt-worker"]  # not root, not even Vault's `default` policy

    # a restart of the server comes back sealed; vault-init unseals it and is idempotent
    (root / "approle" / "secret_id.wrapped").unlink()  # claimed by a worker
    holder[0].terminate()
    holder[0].wait(10)
    proc = subprocess.Popen([str(bao_bin()), "server", f"-config={root / 'bao.hcl'}"],
                            env={k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    holder[0] = proc
    port = int(addr.rsplit(":", 1)[1])
    deadline = time.monotonic() + 30
    while not port_accepts(port):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert httpx.get(f"{addr}/v1/sys/health", timeout=5).status_code == 503  # sealed
    done = _vault_init(addr, root)
    assert done.returncode == 0, done.stderr
    assert httpx.get(f"{addr}/v1/sys/health", timeout=5).status_code == 200
    assert (root / "approle" / "role_id").read_text() == role_id
    assert (root / "approle" / "secret_id.wrapped").read_text() != wrapped  # a fresh one for the next worker


def test_entrypoint_exports_urls_and_claims_each_wrapped_secret_id_once(tmp_path: Path) -> None:
    """deploy/entrypoint.sh with its /run/agentrt paths moved under tmp_path and a stand-in `agentrt`."""
    run_dir = tmp_path / "run"
    creds, approle, bin_dir = run_dir / "credentials", run_dir / "approle", tmp_path / "bin"
    for d in (creds, approle, bin_dir):
        d.mkdir(parents=True)
    (creds / "database_url").write_text("postgresql://agentrt:pw@postgres:5432/agentrt\n")
    (creds / "redis_url").write_text("redis://:pw@redis:6379/0\n")
    (approle / "role_id").write_text("role-1")
    (approle / "secret_id.wrapped").write_text("wrapped-1")
    script = tmp_path / "entrypoint.sh"
    script.write_text((DEPLOY / "entrypoint.sh").read_text().replace("/run/agentrt", str(run_dir)))
    fake = bin_dir / "agentrt"
    fake.write_text('#!/bin/sh\necho "args=$*"\necho "db=$AGENTRT_DATABASE_URL"\necho "redis=$AGENTRT_REDIS_URL"\n'
                    'echo "role=${AGENTRT_VAULT_ROLE_ID:-}"\necho "secret=${AGENTRT_VAULT_SECRET_ID:-}"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin", "VAULT_ADDR": "http://openbao:8200"}

    def start(*args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(["sh", str(script), *args], env=env, stdout=subprocess.PIPE, text=True)

    def lines(proc: subprocess.Popen[str]) -> dict[str, str]:
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 0
        return dict(line.split("=", 1) for line in out.splitlines())

    first = lines(start("worker", "--no-watch"))
    assert first == {"args": "worker --no-watch", "db": "postgresql://agentrt:pw@postgres:5432/agentrt",
                     "redis": "redis://:pw@redis:6379/0", "role": "role-1", "secret": "wrapped-1"}
    assert sorted(p.name for p in approle.iterdir()) == ["role_id"]  # claimed: gone from the volume
    # other commands (doctor in a healthcheck, gc, migrate) get the URLs but never take a secret id
    (approle / "secret_id.wrapped").write_text("wrapped-2")
    doctor = lines(start("doctor"))
    assert doctor["db"].startswith("postgresql://") and doctor["secret"] == ""
    second, third = start("worker"), start("worker")  # two replicas starting together: one file
    time.sleep(1.0)
    (approle / "secret_id.wrapped").write_text("wrapped-3")  # vault-init issues the next one
    got = {lines(second)["secret"], lines(third)["secret"]}
    assert got == {"wrapped-2", "wrapped-3"}
    (approle / "secret_id.wrapped").write_text("wrapped-4")  # the API claims one the same way
    assert lines(start("serve", "--port", "8421"))["secret"] == "wrapped-4"
