"""Throwaway databases for the lab's runs (SQLite files, or databases on a PostgreSQL server)
and plain SQL on them, outside Django."""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg


class Databases:
    """One fresh database per service: SQLite files in a temporary folder, or — when the server
    URL (default: DATABASE_URL) is PostgreSQL — new databases on that server, dropped after."""

    def __init__(self, tmp: Path, server_url: str | None = None, prefix: str = "e2e") -> None:
        self.tmp = tmp
        self.server_url = os.environ.get("DATABASE_URL", "") if server_url is None else server_url
        self.prefix = prefix
        self.created: list[str] = []

    @property
    def is_postgres(self) -> bool:
        return self.server_url.startswith(("postgres://", "postgresql://"))

    def url_for(self, service: str) -> str:
        if not self.is_postgres:
            return (
                f"sqlite:///{self.tmp / f'{self.prefix}_{service}_{uuid.uuid4().hex[:6]}.sqlite3'}"
            )
        name = f"{self.prefix}_{service}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return urlunsplit(urlsplit(self.server_url)._replace(path=f"/{name}"))

    def drop_all(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            for name in self.created:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class ServiceDatabase:
    """Direct SQL on a service's database (SQLite file or PostgreSQL), outside Django."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_postgres = url.startswith(("postgres://", "postgresql://"))

    def _connect(self):
        if self.is_postgres:
            return psycopg.connect(self.url, autocommit=True)
        import sqlite3

        return sqlite3.connect(urlsplit(self.url).path, timeout=10, isolation_level=None)

    def scalar(self, query: str):
        conn = self._connect()
        try:
            return conn.execute(query).fetchone()[0]
        finally:
            conn.close()

    def fetchall(self, query: str) -> list[tuple]:
        conn = self._connect()
        try:
            return [tuple(row) for row in conn.execute(query).fetchall()]
        finally:
            conn.close()

    def execute(self, statements: list[str]) -> None:
        conn = self._connect()
        try:
            for statement in statements:
                conn.execute(statement)
        finally:
            conn.close()

    @contextlib.contextmanager
    def locked(self, table: str):
        """Hold `table` so that every write to it waits or fails for a while."""
        conn = self._connect()
        try:
            if self.is_postgres:
                conn.execute("BEGIN")
                conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            else:
                conn.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
