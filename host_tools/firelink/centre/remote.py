"""Remote commands from the centre's side (issue 12): one command to one device, and its result.

`send()` publishes `{"cmd": ..., "id": <ref>, ...}` on `firelink/<device>/cmd` with a centre
account and waits, bounded, for the `cmd/result` carrying the same id (fl/commands.py,
fl/remote.py; docs/protocol.md). The monitor, subscribed to both topics, records the command
and its result in its store. On a FireLink broker client ids are bound to accounts: while the
monitor runs, send with a `centre-<name>` account, not `monitor` (that would take its place).
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firelink.centre.watch import CentreError, CentreWatch, TLSFiles
from firelink.errors import FAILED, NO_ANSWER, FireLinkError
from firelink.provision.settings import BrokerURL

NAMES = ("status", "config get", "config set", "reboot", "silence", "test", "walktest")


class CommandFailed(FireLinkError):
    """No result, or a refused one; the message says which and why."""

    exit_code = FAILED


class NoResult(CommandFailed):
    exit_code = NO_ANSWER


@dataclass(frozen=True)
class Target:
    url: BrokerURL
    username: str
    password: str | None
    tls: TLSFiles | None = None


def build(name: str, args: list[str], minutes: int | None = None, rollback_s: int | None = None) -> dict[str, Any]:
    """The command's JSON from the CLI's words (`config set broker.port 8883`, `walktest on`)."""
    doc: dict[str, Any] = {"cmd": name}
    if name == "config get":
        if len(args) > 1:
            raise CommandFailed("config get [KEY]")
        if args:
            doc["key"] = args[0]
    elif name == "config set":
        if len(args) != 2:
            raise CommandFailed("config set KEY VALUE (VALUE as JSON: 8883, true, \"text\")")
        doc["key"] = args[0]
        try:
            doc["value"] = json.loads(args[1])
        except ValueError:
            doc["value"] = args[1]
        if rollback_s is not None:
            doc["rollback_s"] = rollback_s
    elif name == "walktest":
        if args not in (["on"], ["off"]):
            raise CommandFailed("walktest on|off")
        doc["on"] = args == ["on"]
        if doc["on"] and minutes is not None:
            doc["minutes"] = minutes
    elif args:
        raise CommandFailed(f"{name} takes no arguments")
    return doc


def send(target: Target, device: str, doc: dict[str, Any], timeout_s: float = 15.0) -> dict[str, Any]:
    """Sends one command and returns its result (ok true); CommandFailed/NoResult otherwise."""
    ref = doc.setdefault("id", "c" + secrets.token_hex(6))
    watch = CentreWatch(target.url, target.username, target.password, target.tls,
                        client_id=f"{target.username}")
    try:
        watch.connect(min(timeout_s, 10.0))
        watch.watch(device, min(timeout_s, 10.0))
        sent = watch.publish_cmd(device, doc, min(timeout_s, 10.0))
        left = max(0.5, timeout_s - (time.monotonic() - sent))
        seen = watch.wait_for(lambda s: s.device == device and s.kind == "cmd_result" and s.doc.get("id") == ref,
                              left, since=sent)
    except CentreError as e:
        raise CommandFailed(str(e)) from e
    finally:
        watch.close()
    if seen is None:
        raise NoResult(f"no result from {device} within {timeout_s:g} s for {doc['cmd']!r} (id {ref}): is it "
                       "online? (the command waits in its session if it is not, and runs when it comes back)")
    if not seen.doc.get("ok"):
        raise CommandFailed(f"{device} refused {doc['cmd']!r}: {seen.doc.get('error', 'no reason given')}")
    return seen.doc


def tls_files(ca: Path | None, cert: Path | None, key: Path | None) -> TLSFiles | None:
    return TLSFiles(ca, cert, key) if ca else None
