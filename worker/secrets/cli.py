"""`agentrt vault policies [--apply] [--json]`: the Vault policies the workflow files need."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worker import output as o
from worker.config import Settings

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 5

Handler = Callable[[argparse.Namespace, Settings], int]


def register(subparsers: Any) -> dict[str, Handler]:
    vault = subparsers.add_parser("vault", help="Vault: least-privilege policies for the workflows")
    sub = vault.add_subparsers(dest="vault_command", metavar="SUBCOMMAND", required=True)
    pol = sub.add_parser("policies", help="show (and with --apply, write) one read-only policy per workflow")
    pol.add_argument("--apply", action="store_true",
                     help="write the policies, the worker policy and the step token role to VAULT_ADDR "
                          "(VAULT_TOKEN must be allowed to manage policies)")
    pol.add_argument("--workflows", type=Path, default=None, help="workflow directory (default: settings)")
    pol.add_argument("--json", action="store_true")
    rot = sub.add_parser("rotate-payload-key",
                         help="rotate the transit key of encrypted payloads (old runs stay readable)")
    rot.add_argument("--json", action="store_true")
    return {"vault": cmd_vault}


def cmd_vault(args: argparse.Namespace, settings: Settings) -> int:
    if args.vault_command == "policies":
        return cmd_policies(args, settings)
    if args.vault_command == "rotate-payload-key":
        return cmd_rotate(args, settings)
    o.err.print(f"unknown vault command {args.vault_command!r}", markup=False)
    return EXIT_USAGE


def cmd_rotate(args: argparse.Namespace, settings: Settings) -> int:
    from worker.errors import WorkerError
    from worker.secrets.transit import build_cipher

    cipher = build_cipher(settings)
    if cipher is None:
        o.err.print("rotate-payload-key needs VAULT_ADDR and VAULT_TOKEN (or AppRole)", markup=False)
        return EXIT_USAGE
    try:
        version = cipher.session._call(cipher.rotate)
    except WorkerError as exc:
        o.err.print(f"could not rotate the key: {exc}", markup=False)
        return EXIT_UNAVAILABLE
    if args.json:
        o.print_json({"key": cipher.key, "latest_version": version})
    else:
        o.out.print(f"transit key {cipher.key} rotated: new payloads use version {version}; "
                    "older versions still decrypt")
    return EXIT_OK


def cmd_policies(args: argparse.Namespace, settings: Settings) -> int:
    from worker.secrets.policies import STEP_TOKEN_ROLE, Policy, apply_policies, load_workflows, policies_for

    directory = args.workflows or settings.workflows_dir
    defns, errors = load_workflows(directory)
    notify_path = f"{settings.notify_vault_mount}/data/{settings.notify_vault_path}"
    policies: list[Policy] = []
    refused: list[Policy] = []
    for p in policies_for(defns):  # the notification secrets are the worker's alone (worker/notify)
        (refused if any(q == notify_path or q.startswith(notify_path + "/") for q in p.paths) else policies).append(p)
    for error in errors:
        o.err.print(f"skipped invalid workflow file {error}", markup=False)
    for p in refused:
        o.err.print(f"refused policy {p.name} ({p.source}): it grants {notify_path}, the notification secrets",
                    markup=False)
    applied = False
    if args.apply:
        if not settings.vault_addr or not settings.vault_token:
            o.err.print("--apply needs VAULT_ADDR and VAULT_TOKEN (a token allowed to write policies)", markup=False)
            return EXIT_USAGE
        import hvac
        import requests

        from worker.secrets.vault import wrap_errors

        try:
            apply_policies(hvac.Client(url=settings.vault_addr, token=settings.vault_token, timeout=10), policies,
                           token_role=settings.vault_token_role or STEP_TOKEN_ROLE, notify_path=notify_path)
        except (hvac.exceptions.VaultError, requests.RequestException) as exc:
            wrapped = wrap_errors(exc, settings.vault_addr)
            o.err.print(f"could not apply policies: {wrapped or exc}", markup=False)
            return EXIT_UNAVAILABLE if isinstance(exc, requests.RequestException) else EXIT_FAIL
        applied = True
    if args.json:
        o.print_json([{"name": p.name, "source": p.source, "paths": list(p.paths), "policy": p.hcl,
                       "applied": applied} for p in policies])
    else:
        if not policies:
            o.out.print(f"no workflow in {directory} declares credentials", markup=False)
        for p in policies:
            o.out.print(f"# {p.name}  ({p.source})", markup=False)
            o.out.print(p.hcl, markup=False)
        if applied:
            o.err.print(f"applied {len(policies)} workflow policies, the worker policy and the step token role",
                        markup=False)
    return EXIT_FAIL if errors or refused else EXIT_OK
