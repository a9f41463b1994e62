"""The tables of auth/ (created by migration 0007), on their own ``MetaData``.

- ``api_keys``: one row per API key. ``id`` is the key's public part (it is in the token,
  so a request finds its row without trying every hash); ``hash`` is the argon2id hash of
  the whole token, ``scopes`` a space separated list. A revoked key keeps its row
  (``revoked_at``) so that its name is not silently reused.
- ``staff_users``: local staff accounts (``python app.py users add NAME``): the argon2id
  hash of the password, an optional ``org_id`` (a staff user of an org sees only that
  org's transfers and plans), ``disabled_at``.
"""
from __future__ import annotations

from sqlalchemy import Column, DateTime, MetaData, String, Table, Text

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("scopes", String(255), nullable=False),
    Column("hash", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
)

staff_users = Table(
    "staff_users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("org_id", String(64)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("disabled_at", DateTime(timezone=True)),
)
