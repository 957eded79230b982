"""A SIMCom A7670-like modem on a pseudo-terminal, and the simulated world of a device's two paths.

This Linux has no PPP, so no real cellular data link can exist here. What stands in for it:
  - ModemSim: the modem's AT side on a pty (the firmware opens it as its UART): boot time,
    echo, replies per command (scriptable), unsolicited codes at chosen times, replies split
    into random writes, a modem that stops answering, SIM states, signal, registration. It
    watches PWRKEY and RESET (line levels the simulated board writes to `sim/pins.json`) and
    records every pulse with the width it saw; they power it on and off and reset it as on
    the module (on ≥ 50 ms, off ≥ 2.5 s, reset ≥ 2 s).
  - After `ATD*99#` → CONNECT it names, in one line `~SIMPPP 127.0.0.1:port`, the loopback
    route the 4G path's sockets take (where PPP's IPCP would give an address): the cellular
    FaultProxy to the broker. Wi-Fi has its own FaultProxy. `NO CARRIER` ends a session.
  - PathWorld: both proxies and the modem for one virtual device, run by its supervisor and
    driven through `sim/paths.json` (`firelink virtual link 4g stall`, `modem sim-missing`, ...)
    so that the CLI and tests in other processes can reach it; its state (pulses, commands,
    bytes per path, data session) is written to `sim/paths_state.json`.
"""
from __future__ import annotations

import json
import os
import random
import select
import threading
import time
import tty
from pathlib import Path
from typing import Any, Callable

from firelink.virtual.pathproxy import FaultProxy

PULSE_ON_MIN_MS = 50
PULSE_OFF_MIN_MS = 2500
RESET_MIN_MS = 2000
SIM_STATES = ("ready", "missing", "pin", "puk")

Reply = Callable[[str], "list[str] | None"]


class ModemSim:
    def __init__(self, directory: Path, route: Callable[[], str], *, boot_s: float = 0.5, powered: bool = False,
                 active_low: dict[str, bool] | None = None, split: bool = True, seed: int | None = None) -> None:
        self.dir = Path(directory)
        self._route = route
        self.boot_s = boot_s
        self.active_low = active_low or {"pwrkey": True, "reset": True}
        self.split = split
        self.rnd = random.Random(seed)
        self.lock = threading.RLock()
        # scripted state
        self.sim = "ready"
        self.pin = "1234"
        self.pin_tries = 3
        self.rssi_csq = 20
        self.reg = 1  # +CEREG stat the network gives
        self.answering = True
        self.hang_survives_pwrkey = False
        self.imsi = "452040123456789"
        self.iccid = "8984048000000000001"
        self.imei = "861234567890123"
        self.fw = "A011B07A7670M7_F"
        self.operator = "Viettel"
        self.band = 3
        self.replies: dict[str, Reply] = {}  # command → lines (None: the normal answer)
        self.dial_ok = True
        # observed
        self.pulses: list[dict[str, Any]] = []
        self.commands: list[str] = []
        self.data = False
        self.dials = 0
        self.powered = False
        self.boots = 0
        self._echo = True
        self._ready_at: float | None = None
        self._cpin_ok = False
        self._inbuf = bytearray()
        self._urcs: list[tuple[float, str]] = []
        self._levels = {"pwrkey": 1 if self.active_low["pwrkey"] else 0,
                        "reset": 1 if self.active_low["reset"] else 0}
        self._edges: dict[str, float] = {}
        self._pins_stamp: tuple[int, int] | None = None
        self._plus_at: float | None = None
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self.master, False)
        self.tty = os.ttyname(self._slave)
        link = self.dir / "modem"
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self.tty)
        if powered:
            self._power_on()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="modemsim", daemon=True)
        self._thread.start()

    # --- driving it ---
    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def urc_in(self, delay_s: float, line: str) -> None:
        with self.lock:
            self._urcs.append((time.monotonic() + delay_s, line))

    def drop_data(self) -> None:
        """The operator ends the data session (they do, about daily)."""
        with self.lock:
            if self.data:
                self.data = False
                self._send("\r\nNO CARRIER\r\n")

    def hang(self, survives_pwrkey: bool = False) -> None:
        """The module's firmware locks up: no answer until a power cycle (or only RESET)."""
        with self.lock:
            self.answering = False
            self.hang_survives_pwrkey = survives_pwrkey

    def set_rssi_dbm(self, dbm: int) -> None:
        self.rssi_csq = max(0, min(31, (dbm + 113) // 2))

    def set_sim(self, state: str) -> None:
        if state not in SIM_STATES:
            raise ValueError(f"SIM state {state!r}: want one of {', '.join(SIM_STATES)}")
        with self.lock:
            self.sim = state
            self._cpin_ok = state == "ready"
            if state != "ready":
                self.drop_data()

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {"powered": self.powered, "answering": self.answering, "data": self.data, "dials": self.dials,
                    "boots": self.boots, "sim": self.sim, "reg": self.reg, "rssi_csq": self.rssi_csq,
                    "pulses": list(self.pulses), "commands": list(self.commands[-200:]),
                    "command_count": len(self.commands)}

    # --- the module ---
    def _power_on(self) -> None:
        self.powered = True
        self.boots += 1
        self._echo = True
        self.data = False
        self.answering = True
        self._cpin_ok = self.sim == "ready"
        self._ready_at = time.monotonic() + self.boot_s
        self._inbuf.clear()

    def _power_off(self) -> None:
        self.powered = False
        self.data = False
        self._ready_at = None

    def _on_pulse(self, line: str, width_ms: int) -> None:
        self.pulses.append({"line": line, "ms": width_ms, "at": time.time()})
        if line == "pwrkey":
            if not self.powered and width_ms >= PULSE_ON_MIN_MS:
                self._power_on()
            elif self.powered and width_ms >= PULSE_OFF_MIN_MS:
                if self.answering or not self.hang_survives_pwrkey:
                    self._power_off()
        elif line == "reset" and width_ms >= RESET_MIN_MS:
            self._power_on()

    def _read_pins(self) -> None:
        path = self.dir / "sim" / "pins.json"
        try:
            st = path.stat()
        except OSError:
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._pins_stamp:
            return
        self._pins_stamp = stamp
        try:
            levels = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        now = time.monotonic()
        for line in ("pwrkey", "reset"):
            if line not in levels:
                continue
            level = int(levels[line])
            if level == self._levels[line]:
                continue
            self._levels[line] = level
            active = level == (0 if self.active_low[line] else 1)
            if active:
                self._edges[line] = now
            elif line in self._edges:
                self._on_pulse(line, int((now - self._edges.pop(line)) * 1000))

    def _send(self, text: str) -> None:
        data = text.encode()
        chunks = [data]
        if self.split and len(data) > 1:
            chunks, i = [], 0
            while i < len(data):
                k = self.rnd.randint(1, 12)
                chunks.append(data[i:i + k])
                i += k
        for c in chunks:
            try:
                os.write(self.master, c)
            except OSError:
                return
            if self.split and self.rnd.random() < 0.3:
                time.sleep(0.001)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self.master], [], [], 0.005)
            except (OSError, ValueError):
                return
            data = b""
            if r:
                try:
                    data = os.read(self.master, 4096)
                except OSError:
                    data = b""
            with self.lock:
                self._read_pins()
                now = time.monotonic()
                if self.powered and self._ready_at is not None and now >= self._ready_at:
                    self._ready_at = None
                    if self.answering:
                        self._send("\r\n*ATREADY\r\n\r\n+CPIN: READY\r\n" if self.sim == "ready" else "\r\n*ATREADY\r\n")
                due = [u for u in self._urcs if u[0] <= now]
                for u in due:
                    self._urcs.remove(u)
                    if self.powered and self.answering:
                        self._send("\r\n" + u[1] + "\r\n")
                if data:
                    self._input(data, now)

    def _input(self, data: bytes, now: float) -> None:
        if not self.powered or self._ready_at is not None or not self.answering:
            return  # an unpowered, booting or hung module hears nothing
        if self.data:
            # In data mode only the escape sequence means anything to the modem.
            if b"+++" in data:
                self._plus_at = now
                self.data = False
                self._send("\r\nOK\r\n")
            return
        self._inbuf += data
        while True:
            cut = self._inbuf.find(b"\r")
            if cut < 0:
                if len(self._inbuf) > 512:
                    self._inbuf.clear()
                return
            raw = bytes(self._inbuf[:cut])
            del self._inbuf[:cut + 1]
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            self.commands.append(line)
            if self._echo:
                self._send(line + "\r")
            self._answer(line)

    def _answer(self, cmd: str) -> None:
        custom = self.replies.get(cmd)
        if custom is not None:
            lines = custom(cmd)
            if lines is not None:
                for ln in lines:
                    self._send("\r\n" + ln + "\r\n")
                return
        ok = "\r\nOK\r\n"
        u = cmd.upper()
        if u == "AT" or u.startswith("AT+CMEE") or u.startswith("AT+CGEREP") or u.startswith("AT+CNMP") \
                or u.startswith("AT+CGDCONT") or u.startswith("AT+CGAUTH") or u == "ATH" or u.startswith("AT&"):
            self._send(ok)
        elif u in ("ATE0", "ATE1"):
            self._echo = u == "ATE1"
            self._send(ok)
        elif u == "AT+CPIN?":
            if self.sim == "missing":
                self._send("\r\n+CME ERROR: 10\r\n")
            elif self.sim == "puk" or self.pin_tries <= 0:
                self._send("\r\n+CPIN: SIM PUK\r\n\r\nOK\r\n")
            elif self.sim == "pin" and not self._cpin_ok:
                self._send("\r\n+CPIN: SIM PIN\r\n\r\nOK\r\n")
            else:
                self._send("\r\n+CPIN: READY\r\n\r\nOK\r\n")
        elif u.startswith("AT+CPIN="):
            if self.sim != "pin" or self.pin_tries <= 0:
                self._send("\r\n+CME ERROR: 3\r\n")
            elif cmd[8:].strip('"') == self.pin:
                self._cpin_ok = True
                self._send(ok + "\r\n+CPIN: READY\r\n")
            else:
                self.pin_tries -= 1
                self._send("\r\n+CME ERROR: 16\r\n")
        elif u in ("AT+CICCID", "AT+CGSN", "AT+CGMR", "AT+CIMI", "AT+CSQ", "AT+COPS?", "AT+CEREG?", "AT+CPSI?"):
            if not self._cpin_ok and u not in ("AT+CGSN", "AT+CGMR"):
                self._send("\r\n+CME ERROR: 10\r\n" if self.sim == "missing" else "\r\n+CME ERROR: 11\r\n")
                return
            body = {"AT+CICCID": "+ICCID: " + self.iccid, "AT+CGSN": self.imei, "AT+CGMR": "+CGMR: " + self.fw,
                    "AT+CIMI": self.imsi, "AT+CSQ": f"+CSQ: {self.rssi_csq},99",
                    "AT+COPS?": f'+COPS: 0,0,"{self.operator}",7', "AT+CEREG?": f"+CEREG: 0,{self.reg}",
                    "AT+CPSI?": self._cpsi()}[u]
            # A real module's habit: an unsolicited code in the middle of an answer.
            extra = "\r\n+CGEV: ME PDN ACT 1\r\n" if self.rnd.random() < 0.2 else ""
            self._send("\r\n" + body + "\r\n" + extra + ok)
        elif u.startswith("ATD"):
            self.dials += 1
            if not self._cpin_ok or self.reg not in (1, 5) or not self.dial_ok:
                self._send("\r\nNO CARRIER\r\n")
            else:
                self.data = True
                self._send("\r\nCONNECT 150000000\r\n")
                self._send("~SIMPPP " + self._route() + "\r\n")
        elif u == "ATO":
            self.data = True
            self._send("\r\nCONNECT 150000000\r\n")
        elif u.startswith("AT+CFUN="):
            self.data = False
            self._send(ok)
        elif u == "AT+CRESET":
            self._send(ok)
            self._power_on()
        else:
            self._send("\r\nERROR\r\n")


    def _cpsi(self) -> str:
        """A7670's LTE answer, in its offsets (RSRQ 2·dB+40, RSRP dBm+140, RSSI dBm+110, RSSNR dB),
        the RSRP ~22 dB under the RSSI as on a loaded 10 MHz cell."""
        if self.reg not in (1, 5):
            return "+CPSI: NO SERVICE,Online"
        rssi = 2 * self.rssi_csq - 113
        rsrp = max(-140, rssi - 22)
        return (f"+CPSI: LTE,Online,{self.imsi[:3]}-{self.imsi[3:5]},0x1A2B,12345678,123,EUTRAN-BAND{self.band},"
                f"1300,5,5,{2 * -10 + 40},{rsrp + 140},{rssi + 110},{max(-10, min(30, self.rssi_csq - 5))}")


class PathWorld:
    """Wi-Fi and 4G of one virtual device: two fault proxies to the broker and the modem,
    driven through `sim/paths.json` and reporting to `sim/paths_state.json`."""

    CONTROL = "sim/paths.json"
    STATE = "sim/paths_state.json"

    def __init__(self, directory: Path, broker: tuple[str, int], board: dict[str, Any] | None = None,
                 boot_s: float = 0.5) -> None:
        self.dir = Path(directory)
        self.broker = broker
        (self.dir / "sim").mkdir(parents=True, exist_ok=True)
        self.proxies = {"wifi": FaultProxy(broker, "wifi"), "cellular": FaultProxy(broker, "cellular")}
        modem = (board or {}).get("modem", {})
        active_low = {"pwrkey": modem.get("pwrkey", {}).get("active_low", True),
                      "reset": modem.get("reset", {}).get("active_low", True)}
        self.modem = ModemSim(self.dir, lambda: self.proxies["cellular"].address, boot_s=boot_s,
                              active_low=active_low)
        self._stamp: tuple[int, int] | None = None
        self._drops_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pathworld", daemon=True)
        self._thread.start()

    def routes(self) -> dict[str, str]:
        return {"wifi": self.proxies["wifi"].address}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.modem.close()
        for p in self.proxies.values():
            p.close()

    def apply(self, control: dict[str, Any]) -> None:
        for name in ("wifi", "cellular"):
            mode = control.get(name)
            if mode and mode != self.proxies[name].mode:
                self.proxies[name].set_mode(mode, control.get(name + "_delay_s"))
        m = control.get("modem", {})
        sim = self.modem
        if "sim" in m and m["sim"] != sim.sim:
            sim.set_sim(m["sim"])
        if "rssi" in m:
            sim.set_rssi_dbm(int(m["rssi"]))
        if "reg" in m and int(m["reg"]) != sim.reg:
            sim.reg = int(m["reg"])
            if sim.reg not in (1, 5):
                sim.drop_data()
        if m.get("hang") and sim.answering and sim.powered:
            sim.hang(survives_pwrkey=m.get("hang") == "reset")
        if m.get("drops", 0) > self._drops_seen:
            self._drops_seen = m["drops"]
            sim.drop_data()

    def _loop(self) -> None:
        last = ""
        while not self._stop.wait(0.05):
            path = self.dir / self.CONTROL
            try:
                st = path.stat()
                stamp = (st.st_mtime_ns, st.st_size)
                if stamp != self._stamp:
                    self._stamp = stamp
                    self.apply(json.loads(path.read_text()))
            except (OSError, ValueError):
                pass
            state = {"modem": self.modem.state(),
                     "paths": {n: {"mode": p.mode, "up": p.up, "down": p.down, "connections": p.connections,
                                   "open": p.open_connections(), "address": p.address}
                               for n, p in self.proxies.items()}}
            text = json.dumps(state)
            if text != last:
                last = text
                tmp = self.dir / (self.STATE + ".tmp")
                tmp.write_text(text)
                os.replace(tmp, self.dir / self.STATE)


def read_state(directory: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(directory) / PathWorld.STATE).read_text())
    except (OSError, ValueError):
        return {}


def read_control(directory: Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(directory) / PathWorld.CONTROL).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_control(directory: Path, changes: dict[str, Any]) -> dict[str, Any]:
    """Merges changes into sim/paths.json (one level deep, like control.json)."""
    path = Path(directory) / PathWorld.CONTROL
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k].update(v)
        else:
            data[k] = v
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)
    return data
