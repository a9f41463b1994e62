"""``python app.py keys ...`` and ``python app.py users ...`` (app.py opens the database
and hands its engine here).

    python app.py keys add NAME --scope pulls [--scope admin ...]   prints the key, once
    python app.py keys list
    python app.py keys revoke NAME
    python app.py users add NAME [--org ORG]     password: first line of stdin, or prompted
    python app.py users list
    python app.py users disable NAME
"""
from __future__ import annotations

import argparse
import getpass
import sys
from typing import TextIO

from sqlalchemy.engine import Engine

from auth import keys, users

COMMANDS = ("keys", "users")


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
    user_cmd = groups.add_parser("users", help="local staff users").add_subparsers(
        dest="command", required=True)
    add_user = user_cmd.add_parser("add", help="add a user; the password is read from "
                                   "standard input (first line) or prompted for")
    add_user.add_argument("name")
    add_user.add_argument("--org", help="the org whose transfers and plans the user sees "
                          "(unset: every org's)")
    user_cmd.add_parser("list", help="list users")
    disable = user_cmd.add_parser("disable", help="disable a user (signed out at once)")
    disable.add_argument("name")
    return top


def read_password(stdin: TextIO) -> str:
    if stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise users.UserProblem("the passwords differ")
        return first
    return stdin.readline().rstrip("\r\n")


def run_users(args: argparse.Namespace, engine: Engine, stdin: TextIO, out: TextIO) -> None:
    if args.command == "add":
        users.add_user(engine, args.name, read_password(stdin), args.org)
        print(f"user {args.name} added" + (f" (org {args.org})" if args.org else ""), file=out)
    elif args.command == "list":
        for user in users.list_users(engine):
            state = "disabled" if user.disabled_at else "active"
            print(f"{user.name}\t{user.org_id or '-'}\t{state}", file=out)
    elif args.command == "disable":
        users.disable_user(engine, args.name)
        print(f"user {args.name} disabled", file=out)


def run(argv: list[str], engine: Engine, out: TextIO = sys.stdout,
        err: TextIO = sys.stderr, stdin: TextIO = sys.stdin) -> int:
    args = parser().parse_args(argv)
    try:
        if args.group == "users":
            run_users(args, engine, stdin, out)
        elif args.command == "add":
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
    except (keys.KeyProblem, users.UserProblem) as exc:
        print(f"error: {exc}", file=err)
        return 1
    return 0
