"""Local staff accounts, for deployments without an identity provider.

``python app.py users add NAME [--org ORG]`` reads the password from standard input (the
first line, when it is not a terminal) or prompts for it twice; it is stored as an argon2id
hash with argon2-cffi's default (password) profile. ``users list``, ``users disable NAME``.
A disabled user's sessions stop working at their next request (every request reads the
row).
"""
from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from auth.schema import staff_users

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 10
HASHER = PasswordHasher()
# verified against when the user does not exist, so that a wrong name takes as long as a
# wrong password (no user enumeration by timing)
_DUMMY = HASHER.hash("not a password of anyone")


class UserProblem(ValueError):
    """A user cannot be added or changed as asked (the message says why)."""


@dataclass(frozen=True)
class User:
    name: str
    org_id: str | None
    created_at: dt.datetime
    disabled_at: dt.datetime | None


def add_user(engine: Engine, name: str, password: str, org_id: str | None = None) -> None:
    if not NAME.match(name):
        raise UserProblem("a user name is 1 to 64 letters, digits, '.', '_', '@' or '-'")
    if len(password) < MIN_PASSWORD:
        raise UserProblem(f"the password must have at least {MIN_PASSWORD} characters")
    try:
        with engine.begin() as conn:
            conn.execute(insert(staff_users).values(
                name=name, password_hash=HASHER.hash(password), org_id=org_id or None,
                created_at=dt.datetime.now(dt.UTC)))
    except IntegrityError:
        raise UserProblem(f"a user named {name!r} exists already") from None


def list_users(engine: Engine) -> list[User]:
    with engine.connect() as conn:
        rows = conn.execute(select(staff_users).order_by(staff_users.c.name)).mappings().all()
    return [User(r["name"], r["org_id"], r["created_at"], r["disabled_at"]) for r in rows]


def disable_user(engine: Engine, name: str) -> None:
    with engine.begin() as conn:
        done = conn.execute(update(staff_users).where(
            staff_users.c.name == name, staff_users.c.disabled_at.is_(None))
            .values(disabled_at=dt.datetime.now(dt.UTC))).rowcount
    if not done:
        raise UserProblem(f"no active user named {name!r}")


def active_user(engine: Engine, name: str) -> User | None:
    with engine.connect() as conn:
        row = conn.execute(select(staff_users).where(staff_users.c.name == name)).mappings().first()
    if row is None or row["disabled_at"] is not None:
        return None
    return User(row["name"], row["org_id"], row["created_at"], None)


def check_password(engine: Engine, name: str, password: str) -> User | None:
    """The active user ``name`` when ``password`` is theirs, else None (blocking: one
    argon2 verification, also for an unknown name)."""
    with engine.connect() as conn:
        row = conn.execute(select(staff_users).where(staff_users.c.name == name)).mappings().first()
    try:
        HASHER.verify(row["password_hash"] if row is not None else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None or row["disabled_at"] is not None:
        return None
    return User(row["name"], row["org_id"], row["created_at"], None)
