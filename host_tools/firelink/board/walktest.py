"""The guided walk test of `firelink diag walktest` (issue 12).

The technician is asked to activate each input in turn; the device's console shows the change
(its state, the Contact ID code it is sent with). With the centre's broker given (`--centre`),
each activation is also followed to the centre: the event as it arrived there (its code, its
`"test": true` flag) and the monitor's `ack`, with the latency from the device's own stamp of the
change (`ts` + `ms`, taken as the input changed) to the ack. That latency is on two clocks (the
device's and this PC's), so it is shown only when the device says its clock is set (`tsync`).

The walk test is on the device (607 `new` on entry, `restore` when it ends, and it ends by
itself after `--minutes`): this only turns it on and off and watches. A centre that cannot be
reached does not stop the walk test: the latency is left out and the reason shown.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from firelink.board.diag import DiagLink
from firelink.centre import contact_id
from firelink.centre import remote as centre_cmd
from firelink.centre.watch import CentreError, CentreWatch, Seen
from firelink.errors import UsageError
from firelink.provision.settings import BrokerURL, _parse_broker

PASSWORD_ENV = "FL_CMD_PASS"  # the same as `firelink cmd`
POLL_S = 0.25
CENTRE_WAIT_S = 15.0  # from the change seen on the console to the event and its ack at the centre
CONNECT_S = 10.0
NOT_WALKED = ("mains", "battery")  # not a technician's to activate


class CentreUnusable(UsageError):
    """--centre given with something missing or malformed."""


class NoSuchInput(UsageError):
    pass


@dataclass
class CentreView:
    """How to reach the centre's broker (checked, not yet connected)."""

    url: BrokerURL
    username: str
    password: str | None
    tls: Any

    @classmethod
    def from_args(cls, url: str, username: str | None, password: str | None, ca: Path | None = None,
                  cert: Path | None = None, key: Path | None = None) -> CentreView:
        problems: list[str] = []
        parsed = _parse_broker(url, problems, [])
        try:
            centre_cmd.check_account(username, "--centre-user")
        except UsageError as e:
            problems.append(str(e))
        if parsed is not None and parsed.tls and ca is None:
            problems.append("--ca: an mqtts:// centre needs the site CA")
        if problems or parsed is None:
            raise CentreUnusable("--centre: " + "; ".join(problems or ["not a broker URL"]))
        return cls(parsed, username or "", password if password is not None else os.environ.get(PASSWORD_ENV),
                   centre_cmd.tls_files(ca, cert, key))


@dataclass
class Result:
    name: str
    seen: str | None = None  # the state it went to
    after_s: float | None = None  # from the prompt to the change seen on the console
    code: str | None = None
    test_flag: bool | None = None  # the event at the centre carried "test": true
    latency_ms: float | None = None  # the device's stamp (the change, debounced) -> the monitor's ack, here
    note: str = ""


class Guide:
    def __init__(self, link: DiagLink, say: Callable[[str], None], wait_s: float,
                 centre: CentreView | None = None) -> None:
        self.link = link
        self.say = say
        self.wait_s = wait_s
        self.centre = centre
        self.watch: CentreWatch | None = None
        self.results: list[Result] = []

    # --- the console ---
    def _inputs(self) -> dict[str, dict[str, Any]]:
        return {i["name"]: i for i in self.link.ask("inputs")["inputs"]}

    def _wait_state(self, name: str, until: Callable[[str], bool]) -> tuple[str | None, float]:
        t0 = time.monotonic()
        while time.monotonic() - t0 < self.wait_s:
            state = self._inputs()[name]["state"]
            if until(state):
                return state, time.monotonic() - t0
            time.sleep(POLL_S)
        return None, time.monotonic() - t0

    # --- the centre ---
    def _connect(self, device: str) -> None:
        assert self.centre is not None
        c = self.centre
        watch = CentreWatch(c.url, c.username, c.password, c.tls, client_id=c.username)
        try:
            watch.connect(CONNECT_S)
            watch.watch(device, CONNECT_S)
        except CentreError as e:
            watch.close()
            self.say(f"[yellow]centre not reachable, so no latency: {e}[/]")
            return
        self.watch = watch
        self.say(f"following the alarms to the centre at {c.url} as {c.username!r}")

    def _at_centre(self, device: str, name: str, since: float, r: Result) -> None:
        """The event for this activation as the centre got it, and the monitor's ack."""
        watch = self.watch
        assert watch is not None

        def event(s: Seen) -> bool:
            return (s.device == device and s.kind == "event" and s.doc.get("input") == name
                    and s.doc.get("q") == "new" and not s.retained)

        ev = watch.wait_for(event, CENTRE_WAIT_S, since=since)
        if ev is None:
            r.note = f"no event for {name} at the centre within {CENTRE_WAIT_S:g} s"
            return
        r.code, r.test_flag = str(ev.doc.get("code")), ev.doc.get("test") is True
        ack = watch.wait_for(lambda s: s.device == device and s.kind == "ack" and s.doc.get("id") == ev.doc.get("id"),
                             CENTRE_WAIT_S, since=ev.at)
        if ack is None:
            r.note = f"the event reached the broker but no monitor acknowledged it within {CENTRE_WAIT_S:g} s"
            return
        ts, ms = ev.doc.get("ts"), ev.doc.get("ms") or 0
        if ev.doc.get("tsync") is True and isinstance(ts, int) and isinstance(ms, int):
            r.latency_ms = 1000 * (ack.wall - (ts + ms / 1000))
        else:
            r.note = "acknowledged by the centre; the device's clock is not set, so no latency"

    # --- the walk ---
    def run(self, only: list[str] | None, minutes: int) -> int:
        link = self.link
        device = link.ask("id")["id"]["id"]
        states = self._inputs()
        names = only or [n for n, i in states.items() if i.get("kind") not in NOT_WALKED]
        unknown = [n for n in names if n not in states]
        if unknown:
            raise NoSuchInput(f"no such input(s): {', '.join(unknown)}; the device has {', '.join(states)}")
        if self.centre is not None:
            self._connect(device)
        try:
            link.ask(f"walk on {minutes}")
            self.say(f"[magenta]walk test on[/] (607 sent; ends by itself after {minutes} min); "
                     "alarms reach the centre flagged as test")
            try:
                for name in names:
                    self.results.append(self._one(device, name, states[name]))
            finally:
                link.ask("walk off")
                self.say("[magenta]walk test off[/] (607 restore sent)")
        finally:
            if self.watch is not None:
                self.watch.close()
        missed = [r.name for r in self.results if r.seen is None]
        if missed:
            self.say(f"[red]not seen: {', '.join(missed)}[/]")
            return 1
        self.say("[green]every input seen[/]")
        return 0

    def _one(self, device: str, name: str, before_info: dict[str, Any]) -> Result:
        before = before_info["state"]
        r = Result(name)
        self.say(f"activate [bold]{name}[/] now (waiting {self.wait_s:.0f} s)…")
        since = time.monotonic()
        r.seen, r.after_s = self._wait_state(name, lambda s: s != before)
        if r.seen is None:
            self.say(f"  [red]{name}: no change seen[/]")
            return r
        r.code = before_info.get("code")
        if self.watch is not None:
            self._at_centre(device, name, since, r)
        self.say("  " + self.line(r, before))
        self.say(f"  restore {name} now")
        self._wait_state(name, lambda s: s == before)
        return r

    @staticmethod
    def line(r: Result, before: str) -> str:
        text = f"[green]{r.name}: {before} → {r.seen}[/] seen after {r.after_s:.1f} s"
        if r.code:
            text += f"; code {r.code} ({contact_id.meaning(r.code)})"
        if r.test_flag is not None:
            text += ", flagged test" if r.test_flag else ", [red]NOT flagged test[/]"
        if r.latency_ms is not None:
            text += f"; latency to the centre {r.latency_ms:.0f} ms (the device's stamp → the monitor's ack)"
        if r.note:
            text += f" [yellow]({r.note})[/]"
        return text
