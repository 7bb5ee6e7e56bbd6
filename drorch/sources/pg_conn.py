"""Talking to a PostgreSQL server (psycopg 3): connect with clear errors, run
the few queries a backup needs."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from drorch.errors import SourceError


@dataclass(frozen=True)
class PgParams:
    host: str = "127.0.0.1"
    port: int = 5432
    user: str = "postgres"
    dbname: str = "postgres"
    password: str | None = None
    sslmode: str | None = None
    connect_timeout: int = 10

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}/{self.dbname}"

    def conninfo(self, dbname: str | None = None) -> str:
        parts = {"host": self.host, "port": self.port, "user": self.user, "dbname": dbname or self.dbname,
                 "connect_timeout": self.connect_timeout, "application_name": "drorch"}
        if self.sslmode:
            parts["sslmode"] = self.sslmode
        return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


def connect(params: PgParams, dbname: str | None = None) -> psycopg.Connection:
    try:
        return psycopg.connect(params.conninfo(dbname), password=params.password, autocommit=True)
    except psycopg.OperationalError as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SourceError(f"cannot connect to PostgreSQL {params.describe()}: {detail}",
                          "check `connection:` in the policy, that the server runs, and pg_hba.conf") from None


def one(conn: psycopg.Connection, query: str, params: tuple | None = None):
    row = conn.execute(query, params).fetchone()
    return row[0] if row and len(row) == 1 else row


def server_facts(conn: psycopg.Connection) -> dict:
    version = one(conn, "SHOW server_version_num")
    return {
        "pg_version_num": int(version),
        "pg_version": one(conn, "SHOW server_version"),
        "system_identifier": str(one(conn, "SELECT system_identifier FROM pg_control_system()")),
        "data_checksums": one(conn, "SHOW data_checksums") == "on",
        "wal_segment_size": int(one(conn, "SELECT setting::int * CASE unit WHEN '8kB' THEN 8192 "
                                            "WHEN 'B' THEN 1 ELSE 1 END FROM pg_settings "
                                            "WHERE name = 'wal_segment_size'")),
        "in_recovery": bool(one(conn, "SELECT pg_is_in_recovery()")),
        "data_directory": one(conn, "SHOW data_directory"),
        "config_file": one(conn, "SHOW config_file"),
        "hba_file": one(conn, "SHOW hba_file"),
        "ident_file": one(conn, "SHOW ident_file"),
        "tablespaces": {str(oid): location for oid, location in conn.execute(
            "SELECT oid, pg_tablespace_location(oid) FROM pg_tablespace "
            "WHERE spcname NOT IN ('pg_default', 'pg_global')").fetchall()},
    }
