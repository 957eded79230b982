"""The installer's inventory: which boards were provisioned, for which site, with which credential.

One SQLite file (default `run/inventory.db`). `devices` holds one row per device id, replaced
when the board is provisioned again; `history` keeps every provisioning, commissioning result
and revocation, so a configuration change is always logged (standards.md, security). No secret
is ever stored: the credential is known by the sha256 of its client certificate (DER), the
broker holds only a password hash. Times are UTC, ISO 8601 with a `Z`.
"""
from __future__ import annotations

import datetime as dt
import getpass
import json
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from firelink.errors import FireLinkError

DEFAULT_PATH = Path("run/inventory.db")
SCHEMA_VERSION = 2  # 2: cert_not_after
ACTIVE, REVOKED = "active", "revoked"

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY,
    mac TEXT NOT NULL,
    site TEXT NOT NULL,
    inputs TEXT NOT NULL,            -- JSON list: the inputs as the firmware validated them
    firmware TEXT,
    cert_fingerprint TEXT NOT NULL,  -- sha256 (hex) of the client certificate, DER
    provisioned_at TEXT NOT NULL,
    provisioned_by TEXT NOT NULL,
    broker_url TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('active', 'revoked')),
    revoked_at TEXT,
    revoked_by TEXT,
    last_result TEXT,                -- 'pass' or 'fail: <check>: <why>'
    last_result_at TEXT,
    last_report TEXT,                -- path of the commissioning report (Markdown)
    cert_not_after TEXT              -- the client certificate's end (UTC, ISO 8601): renew before it
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY,
    device_id TEXT NOT NULL,
    at TEXT NOT NULL,
    action TEXT NOT NULL,            -- provisioned, commissioned, failed, revoked
    by TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS history_device ON history (device_id, id);
"""


class InventoryError(FireLinkError, RuntimeError):
    pass


class UnknownDevice(InventoryError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def installer_name(given: str | None = None) -> str:
    """Who is doing it: the name given (--installer), else the OS user."""
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    mac: str
    site: str
    inputs: list[dict[str, Any]]
    firmware: str | None
    cert_fingerprint: str
    provisioned_at: str
    provisioned_by: str
    broker_url: str
    state: str
    revoked_at: str | None = None
    revoked_by: str | None = None
    last_result: str | None = None
    last_result_at: str | None = None
    last_report: str | None = None
    cert_not_after: str | None = None  # None: provisioned before the inventory kept it

    def cert_days_left(self, now: dt.datetime | None = None) -> float | None:
        if not self.cert_not_after:
            return None
        end = dt.datetime.strptime(self.cert_not_after, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.timezone.utc)
        return (end - (now or dt.datetime.now(dt.timezone.utc))).total_seconds() / 86400


@dataclass(frozen=True)
class HistoryEntry:
    device_id: str
    at: str
    action: str
    by: str
    detail: str


_COLS = ("device_id, mac, site, inputs, firmware, cert_fingerprint, provisioned_at, provisioned_by, broker_url, "
         "state, revoked_at, revoked_by, last_result, last_result_at, last_report, cert_not_after")


class Inventory:
    """The inventory file. Each change is one transaction; open, use, close (or `with`)."""

    def __init__(self, path: Path | str = DEFAULT_PATH) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=5.0)
            self._db.execute("PRAGMA foreign_keys = ON")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise InventoryError(f"{self.path} was written by a newer firelink (schema {version}); "
                                     "update the host tools")
            with self._db:
                if version == 1:  # an inventory from before certificate end dates were kept
                    self._db.execute("ALTER TABLE devices ADD COLUMN cert_not_after TEXT")
                self._db.executescript(SCHEMA)
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as e:
            raise InventoryError(f"cannot open the inventory {self.path}: {e}") from e

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Inventory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- changes ---
    def record_provisioned(self, device_id: str, mac: str, site: str, inputs: list[dict[str, Any]],
                           firmware: str | None, cert_fingerprint: str, by: str, broker_url: str,
                           at: str | None = None, cert_not_after: str | None = None) -> DeviceRecord:
        """A board now holds a new configuration and credential: (re)places its row as active."""
        at = at or utc_now()
        previous = self.find(device_id)
        detail = f"site {site!r}, broker {broker_url}, cert {cert_fingerprint[:16]}"
        if previous is not None:
            detail += f"; replaces cert {previous.cert_fingerprint[:16]} ({previous.state})"
        with self._tx() as db:
            db.execute(f"INSERT OR REPLACE INTO devices ({_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       (device_id, mac, site, json.dumps(inputs, sort_keys=True), firmware, cert_fingerprint, at,
                        by, broker_url, ACTIVE, None, None, None, None, None, cert_not_after))
            self._log(db, device_id, at, "provisioned", by, detail)
        return self.get(device_id)

    def record_result(self, device_id: str, passed: bool, summary: str, by: str, report: Path | None = None,
                      at: str | None = None, history_only: bool = False) -> None:
        """The outcome of a commissioning attempt, in the history and as the row's last result.
        `history_only` for an attempt that left the board as it was (the row still describes it)."""
        at = at or utc_now()
        text = "pass" if passed else f"fail: {summary}"
        with self._tx() as db:
            if not history_only:
                db.execute("UPDATE devices SET last_result = ?, last_result_at = ?, last_report = ? WHERE device_id = ?",
                           (text, at, str(report) if report else None, device_id))
            self._log(db, device_id, at, "commissioned" if passed else "failed", by,
                      text + (f" (report {report})" if report else ""))

    def mark_revoked(self, device_id: str, by: str, detail: str = "", at: str | None = None) -> DeviceRecord:
        at = at or utc_now()
        self.get(device_id)
        with self._tx() as db:
            db.execute("UPDATE devices SET state = ?, revoked_at = ?, revoked_by = ? WHERE device_id = ?",
                       (REVOKED, at, by, device_id))
            self._log(db, device_id, at, "revoked", by, detail)
        return self.get(device_id)

    # --- queries ---
    def find(self, device_id: str) -> DeviceRecord | None:
        row = self._query(f"SELECT {_COLS} FROM devices WHERE device_id = ?", (device_id,))
        return _record(row[0]) if row else None

    def get(self, device_id: str) -> DeviceRecord:
        rec = self.find(device_id)
        if rec is None:
            raise UnknownDevice(f"no device {device_id!r} in the inventory {self.path}")
        return rec

    def devices(self, state: str | None = None, site: str | None = None) -> list[DeviceRecord]:
        sql, params = f"SELECT {_COLS} FROM devices", []
        where = []
        if state:
            where.append("state = ?")
            params.append(state)
        if site:
            where.append("site = ?")
            params.append(site)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [_record(r) for r in self._query(sql + " ORDER BY site, device_id", tuple(params))]

    def by_mac(self, mac: str) -> list[DeviceRecord]:
        return [_record(r) for r in self._query(f"SELECT {_COLS} FROM devices WHERE mac = ?", (mac,))]

    def history(self, device_id: str | None = None) -> list[HistoryEntry]:
        sql = "SELECT device_id, at, action, by, detail FROM history"
        rows = self._query(sql + (" WHERE device_id = ? ORDER BY id" if device_id else " ORDER BY id"),
                           (device_id,) if device_id else ())
        return [HistoryEntry(*r) for r in rows]

    # --- plumbing ---
    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._db:  # commits, or rolls back on any exception
                yield self._db
        except sqlite3.Error as e:
            raise InventoryError(f"inventory {self.path}: {e}") from e

    def _query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        try:
            return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as e:
            raise InventoryError(f"inventory {self.path}: {e}") from e

    @staticmethod
    def _log(db: sqlite3.Connection, device_id: str, at: str, action: str, by: str, detail: str) -> None:
        db.execute("INSERT INTO history (device_id, at, action, by, detail) VALUES (?,?,?,?,?)",
                   (device_id, at, action, by, detail))


def _record(r: tuple[Any, ...]) -> DeviceRecord:
    values = list(r)
    values[3] = json.loads(values[3])
    return DeviceRecord(*values)


def iter_inputs(rec: DeviceRecord) -> Iterator[tuple[str, str, str]]:
    """(name, kind, channel) of each input, for listings."""
    for e in rec.inputs:
        yield str(e.get("name", "?")), str(e.get("kind", "?")), str(e.get("channel", "?"))
