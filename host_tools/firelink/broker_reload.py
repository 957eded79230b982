"""Makes a running site broker take a new password file and ACL now.

`Broker` sends mosquitto SIGHUP itself only when this process started it. When the broker runs
elsewhere on this machine (`firelink broker` in another terminal, a service), a provisioned
device could not connect, and a revoked one would keep its session, until someone restarted
it. mosquitto re-reads `password_file` and `acl_file` on SIGHUP and drops connected clients
that are no longer allowed (measured with 2.0.11: "Reloading config." then "Client … disconnected").

The process is found by its exact command line (`mosquitto -c <this broker's mosquitto.conf>`),
never by name alone, so another site's broker on the same machine is left alone. Linux only
(/proc); elsewhere the caller is told to reload the broker by hand.
"""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from firelink.broker import Broker


@dataclass
class ReloadOutcome:
    signalled: list[int] = field(default_factory=list)  # pids sent SIGHUP
    problems: list[str] = field(default_factory=list)  # why some could not be

    @property
    def reloaded(self) -> bool:
        return bool(self.signalled) and not self.problems


def broker_pids(conf_file: Path, proc: Path = Path("/proc")) -> list[int]:
    """Pids of mosquitto processes started with `-c conf_file`."""
    want = str(Path(conf_file).resolve())
    found = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        return []
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        args = [a.decode(errors="replace") for a in argv if a]
        if not args or os.path.basename(args[0]) != "mosquitto":
            continue
        for i, a in enumerate(args[:-1]):
            if a == "-c" and _same(args[i + 1], want, entry):
                found.append(int(entry.name))
                break
    return sorted(found)


def _same(path: str, want: str, entry: Path) -> bool:
    if not os.path.isabs(path):
        try:
            path = os.path.join(os.readlink(entry / "cwd"), path)
        except OSError:
            return False
    return os.path.realpath(path) == want


def reload(broker: Broker) -> ReloadOutcome:
    """SIGHUP to every mosquitto serving `broker`'s directory (its own process included)."""
    out = ReloadOutcome()
    pids = broker_pids(broker.conf_file)
    if broker.proc is not None and broker.proc.poll() is None and broker.proc.pid not in pids:
        pids.append(broker.proc.pid)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGHUP)
            out.signalled.append(pid)
        except ProcessLookupError:
            continue
        except PermissionError:
            out.problems.append(f"not allowed to signal mosquitto (pid {pid}): run `kill -HUP {pid}` as its "
                                "owner, or restart the broker")
    return out
