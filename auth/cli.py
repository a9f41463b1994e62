"""``python app.py keys ...`` and ``python app.py users ...`` (app.py opens the database
and hands its engine here).

    python app.py keys add NAME --scope pulls [--scope admin ...]   prints the key, once
    python app.py keys list
    python app.py keys revoke NAME
"""
from __future__ import annotations

import argparse
import sys
from typing import TextIO

from sqlalchemy.engine import Engine

from auth import keys

COMMANDS = ("keys",)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="app.py", description="credentials of the gateway")
    groups = top.add_subparsers(dest="group", required=True)
    key_cmd = groups.add_parser("keys", help="API keys").add_subparsers(dest="command",
                                                                           required=True)
    add = key_cmd.add_parser("add", help="create a key and print it (once)")
    add.add_argument("name")
    add.add_argument("--scope", action="append", required=True, choices=keys.SCOPES,
                     help="a scope of the key (repeat for more)")
    key_cmd.add_parser("list", help="list keys (never their tokens)")
    revoke = key_cmd.add_parser("revoke", help="revoke a key")
    revoke.add_argument("name")
    return top


def run(argv: list[str], engine: Engine, out: TextIO = sys.stdout,
        err: TextIO = sys.stderr) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "add":
            token = keys.create_key(engine, args.name, args.scope)
            print(f"# key {args.name} (scopes: {' '.join(sorted(set(args.scope)))}); it is "
                  "not shown again", file=err)
            print(token, file=out)
        elif args.command == "list":
            for key in keys.list_keys(engine):
                state = f"revoked {key.revoked_at:%Y-%m-%dT%H:%M:%SZ}" if key.revoked_at else "active"
                print(f"{key.name}\t{' '.join(key.scopes)}\t{state}\t"
                      f"created {key.created_at:%Y-%m-%dT%H:%M:%SZ}", file=out)
        elif args.command == "revoke":
            keys.revoke_key(engine, args.name)
            print(f"key {args.name} revoked", file=out)
    except keys.KeyProblem as exc:
        print(f"error: {exc}", file=err)
        return 1
    return 0
