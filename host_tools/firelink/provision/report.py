"""The commissioning report: what was checked on a board, and how it went, for a person to keep.

`CommissioningResult` is what `provision()` returns (and carries in its errors). `save()` writes
it under `run/reports/` as `<device_id>-<UTC time>.md` (Markdown: readable as text, printable)
and a `.json` twin for tools; `render()` gives the same as rich tables for the terminal. No
secret appears in any of them: only the certificate's fingerprint and the account's name.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

DEFAULT_DIR = Path("run/reports")
PASS, FAIL, SKIP = "pass", "fail", "skipped"
NOT_USED = "not used"  # a check of a part the site does not have (4G not configured): not a failure

# The checks of a commissioning, in order, with what each proves.
CHECKS = (
    ("settings", "the values given are valid"),
    ("broker", "the broker is reachable and accepts the monitor account"),
    ("board", "the board answers, runs MicroPython and the FireLink app; its MAC is read"),
    ("configuration", "the firmware's own validator accepts the new config.json"),
    ("files", "config, secrets and certificates are on the board, hash-checked"),
    ("registration", "the broker has the account, its ACL covers the device; the inventory has it"),
    ("online", "after a reboot the board says `online` to the broker with its new credentials"),
    ("heartbeat", "the first heartbeat arrives: input states, link, signal; no active fault"),
    ("test alarm", "a 601 test event goes board → broker → centre, and the centre's ack comes back"),
    ("4g", "with 4G on: a heartbeat over 4G reaches the broker, no modem fault; the modem's health is read"),
)


@dataclass
class Check:
    name: str
    status: str = SKIP  # pass, fail, skipped
    detail: str = ""


@dataclass
class TestAlarm:
    event_id: str
    seq: int | None
    at_utc: str  # when the event reached the broker's subscribers (host clock)
    device_ts: int | None  # the event's own time stamp (board clock)
    device_clock_synced: bool
    record_ms: float  # command sent → event received
    ack_ms: float  # event received → centre's ack received
    round_trip_ms: float  # command sent → ack received


@dataclass
class CommissioningResult:
    site: str
    broker_url: str
    wifi_ssid: str | None  # None: a site without Wi-Fi (4G alone)
    installer: str
    started_utc: str
    port: str
    apn: str | None = None
    cellular: bool = False  # 4G configured
    cell: dict[str, Any] = field(default_factory=dict)  # the modem's health (`status` link.cell)
    cell_paths: dict[str, str] = field(default_factory=dict)  # each path: up / suspect / down
    device_id: str | None = None
    mac: str | None = None
    firmware: str | None = None
    micropython: str | None = None
    platform: str | None = None
    cert_fingerprint: str | None = None
    inputs: list[dict[str, Any]] = field(default_factory=list)  # as the firmware validated them
    input_states: dict[str, str] = field(default_factory=dict)  # from the first heartbeat
    link_path: str | None = None
    signal_dbm: int | None = None
    battery_mv: int | None = None
    mains: str | None = None
    faults: dict[str, str] = field(default_factory=dict)
    reset_cause: str | None = None
    test_alarm: TestAlarm | None = None
    checks: list[Check] = field(default_factory=lambda: [Check(n) for n, _ in CHECKS])
    warnings: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # the board's error lines, when it failed
    finished_utc: str | None = None
    seconds: float | None = None
    changed_board: bool = False  # whether new files were put in place on the board
    report_md: str | None = None
    report_json: str | None = None

    @property
    def passed(self) -> bool:
        return all(c.status in (PASS, NOT_USED) for c in self.checks)

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def failed(self) -> Check | None:
        return next((c for c in self.checks if c.status == FAIL), None)

    def summary(self) -> str:
        f = self.failed()
        if f is None:
            return "pass" if self.passed else "incomplete"
        return f"{f.name}: {f.detail}"


def signal_quality(path: str | None, dbm: int | None) -> str:
    """good / fair / poor, with the installers' usual thresholds (cellular.md for 4G)."""
    if dbm is None:
        return "unknown"
    good, fair = (-93, -103) if path == "cellular" else (-67, -75)
    return "good" if dbm >= good else "fair" if dbm >= fair else "poor"


def _signal_text(r: CommissioningResult) -> str:
    if r.link_path is None:
        return "-"
    dbm = "signal unknown" if r.signal_dbm is None else f"{r.signal_dbm} dBm"
    return f"{r.link_path}, {dbm} ({signal_quality(r.link_path, r.signal_dbm)})"


REG = {0: "not searching", 1: "registered (home)", 2: "searching", 3: "registration denied", 4: "unknown",
       5: "registered (roaming)", 6: "SMS only", 7: "SMS only (roaming)"}


def cell_quality(cell: dict[str, Any]) -> str:
    """good / fair / poor from the modem's RSSI (CSQ) and RSRP: good at rssi ≥ 10 (−93 dBm) and
    RSRP ≥ −105 dBm, poor below rssi 5 (−103 dBm) or RSRP −115 dBm (cellular.md)."""
    dbm, rsrp = cell.get("dbm"), cell.get("rsrp")
    if not isinstance(dbm, int) and not isinstance(rsrp, int):
        return "unknown"
    worst = "good"
    if isinstance(dbm, int):
        worst = signal_quality("cellular", dbm)
    if isinstance(rsrp, int) and worst != "poor":
        worst = "poor" if rsrp < -115 else "fair" if rsrp < -105 else worst
    return worst


def cell_text(r: CommissioningResult) -> str:
    """The 4G result in one line: operator, technology, band, signal, registration, APN, SIM and
    module identity, as the board reported them."""
    if not r.cellular:
        return "not configured"
    c = r.cell
    if not c:
        return "no health reported"

    def v(key: str, unit: str = "") -> str | None:
        x = c.get(key)
        return None if x is None else f"{x}{unit}"

    radio = " ".join(x for x in (v("op"), v("act"), v("band")) if x) or "no operator"
    sig = [x for x in (v("dbm", " dBm"),) if x]
    sig += [f"{k.upper()} {x}" for k, x in (("rsrp", v("rsrp", " dBm")), ("rsrq", v("rsrq", " dB")),
                                             ("sinr", v("sinr", " dB"))) if x]
    parts = [radio, (", ".join(sig) or "signal unknown") + f" ({cell_quality(c)})",
             REG.get(c.get("reg"), f"registration {c.get('reg')}") if c.get("reg") is not None else "not registered",
             f"modem {c.get('state')}"]
    parts += [f"{label} {c[k]}" for label, k in (("APN", "apn"), ("ICCID", "iccid"), ("IMEI", "imei"),
                                                 ("modem firmware", "fw")) if c.get(k)]
    resets = c.get("resets")
    if isinstance(resets, dict) and any(resets.values()):
        parts.append("resets " + ", ".join(f"{k} {n}" for k, n in resets.items() if n))
    return "; ".join(parts)


def facts(r: CommissioningResult) -> list[tuple[str, str]]:
    """The report's header, as (label, value) rows."""
    t = r.test_alarm
    rows = [
        ("Result", "PASS" if r.passed else f"FAIL ({r.summary()})"),
        ("Device id", r.device_id or "-"),
        ("MAC", r.mac or "-"),
        ("Site", r.site),
        ("Firmware", f"FireLink {r.firmware}" if r.firmware else "-"),
        ("Board", f"{r.platform}, MicroPython {r.micropython}" if r.platform else "-"),
        ("Broker", r.broker_url),
        ("Wi-Fi network", r.wifi_ssid if r.wifi_ssid is not None else "none: 4G alone"),
        ("4G APN", r.apn or ("from the SIM's operator" if r.cellular else "-")),
        ("4G", cell_text(r)),
        ("Credential", f"client certificate sha256 {r.cert_fingerprint}" if r.cert_fingerprint else "-"),
        ("Link and signal", _signal_text(r)),
        ("Mains / battery", f"{r.mains or '-'} / {r.battery_mv if r.battery_mv is not None else '-'} mV"),
        ("Reset cause", r.reset_cause or "-"),
        ("Test alarm", f"{t.at_utc} (event {t.event_id}, seq {t.seq})" if t else "-"),
        ("Round trip", f"{t.round_trip_ms:.0f} ms (recorded and received in {t.record_ms:.0f} ms, "
                       f"acknowledged by the centre {t.ack_ms:.0f} ms later)" if t else "-"),
        ("Installer", r.installer),
        ("Date", r.finished_utc or r.started_utc),
        ("Duration", f"{r.seconds:.1f} s" if r.seconds is not None else "-"),
    ]
    return rows


def input_rows(r: CommissioningResult) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for e in r.inputs:
        name = str(e.get("name", "?"))
        rows.append((name, str(e.get("kind", "?")), str(e.get("channel", "?")), str(e.get("zone", "?")),
                     r.input_states.get(name, "not reported")))
    return rows


# --- terminal ---

def render(r: CommissioningResult) -> Group:
    head = Table(title=f"Commissioning report: {r.device_id or r.port}", show_header=False, title_justify="left")
    head.add_column(style="bold")
    head.add_column()
    for label, value in facts(r):
        style = ("green" if r.passed else "red") if label == "Result" else None
        head.add_row(label, Text(value, style=style or ""))
    inputs = Table("input", "kind", "channel", "zone", "state (live)", title="Inputs", title_justify="left")
    for name, kind, channel, zone, state in input_rows(r):
        inputs.add_row(name, kind, channel, zone, Text(state, style="" if state == "normal" else "yellow"))
    checks = Table("check", "result", "detail", title="Checks", title_justify="left")
    for c in r.checks:
        style = {"pass": "green", "fail": "bold red"}.get(c.status, "dim")
        checks.add_row(c.name, Text(c.status.upper(), style=style), c.detail)
    parts: list[Any] = [head]
    if r.inputs:
        parts.append(inputs)
    parts.append(checks)
    if r.console:
        parts.append(Text("The board said:\n" + "\n".join(f"  {line}" for line in r.console), style="yellow"))
    return Group(*parts)


# --- files ---

def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(r: CommissioningResult) -> str:
    lines = [f"# FireLink commissioning report: {r.device_id or r.port}", ""]
    lines += ["| | |", "|---|---|"] + [f"| {label} | {_md_cell(value)} |" for label, value in facts(r)] + [""]
    if r.inputs:
        lines += ["## Inputs (state from the first heartbeat)", "", "| input | kind | channel | zone | state |",
                  "|---|---|---|---|---|"]
        lines += [f"| {' | '.join(_md_cell(v) for v in row)} |" for row in input_rows(r)] + [""]
    lines += ["## Checks", "", "| check | what it proves | result | detail |", "|---|---|---|---|"]
    meaning = dict(CHECKS)
    for c in r.checks:
        lines.append(f"| {c.name} | {meaning.get(c.name, '')} | **{c.status.upper()}** | {_md_cell(c.detail)} |")
    lines.append("")
    if r.faults:
        lines += ["## Active faults reported by the board", ""] + [f"- {k}: {v}" for k, v in r.faults.items()] + [""]
    if r.warnings:
        lines += ["## Warnings", ""] + [f"- {w}" for w in r.warnings] + [""]
    if r.console:
        lines += ["## What the board printed", "", "```"] + r.console + ["```", ""]
    lines += ["Signed (installer): ______________________    Date: ____________", ""]
    return "\n".join(lines)


def file_stamp(utc_iso: str) -> str:
    """2026-11-20T10:15:30Z -> 20261120T101530Z"""
    return utc_iso.replace("-", "").replace(":", "")


def save(r: CommissioningResult, directory: Path = DEFAULT_DIR) -> Path:
    """Writes <dir>/<device_id>-<UTC>.md and .json; returns the Markdown path."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{r.device_id or 'unidentified'}-{file_stamp(r.finished_utc or r.started_utc)}"
    md, js, n = directory / f"{stem}.md", directory / f"{stem}.json", 1
    while md.exists() or js.exists():  # two attempts within a second: keep both
        n += 1
        md, js = directory / f"{stem}-{n}.md", directory / f"{stem}-{n}.json"
    r.report_md, r.report_json = str(md), str(js)
    _write(md, markdown(r))
    doc = asdict(r)
    doc["passed"] = r.passed
    _write(js, json.dumps(doc, indent=1, sort_keys=True) + "\n")
    return md


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def utc_iso(t: float | None = None) -> str:
    when = dt.datetime.now(dt.timezone.utc) if t is None else dt.datetime.fromtimestamp(t, dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
