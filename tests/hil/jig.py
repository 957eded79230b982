"""The host's side of the test jig (jig/, issue 13): its serial protocol, its clock, and the
simulated jig CI runs (the jig firmware under the unix port on a pseudo-terminal, wired to a
virtual device). A real jig differs only in the serial port.

    jig = Jig.open("/dev/ttyACM0")          # or SimJig(device_dir).start() -> its pty path
    jig.set({"in1": "closed"})              # -> the jig's clock at the edge, as host time
    jig.power(False); jig.pulse_en(100); jig.read()
"""
from __future__ import annotations

import json
import os
import subprocess
import time
import tty
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firelink.virtual.unixport import micropython_binary

ROOT = Path(__file__).resolve().parents[2]
JIG_FIRMWARE = ROOT / "jig"
JIG_WIRING = ROOT / "hardware" / "jig.json"
DEFAULT_TIMEOUT_S = 10.0  # POWER waits up to its settle time, EN pulses up to 5 s


class JigError(RuntimeError):
    """The jig answered ERR, or did not answer; the message is its reason."""


@dataclass
class Answer:
    verb: str
    fields: dict[str, str]
    text: str

    @property
    def edge_us(self) -> int:
        return int(self.fields["us"])


class Jig:
    """One jig on a serial port, spoken to with tagged commands (stray lines are skipped)."""

    def __init__(self, ser: Any, port: str) -> None:
        self._ser = ser
        self.port = port
        self._tag = 0
        self._buf = b""
        self._clock: tuple[int, float] | None = None  # (jig us, host time.time()) at the last sync
        self._ser.reset_input_buffer()
        v = self.command("VERSION")
        self.version = v.fields
        self.period = int(v.fields["period"])
        self.map: dict[str, Any] = json.loads(self.command("MAP").text[len("MAP "):])

    @classmethod
    def open(cls, port: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Jig:
        import serial

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                ser = serial.Serial(port, 115200, timeout=0.05, dsrdtr=False, rtscts=False)
                break
            except serial.SerialException as e:
                if time.monotonic() > deadline:
                    raise JigError(f"cannot open the jig's port {port}: {e}") from None
                time.sleep(0.05)
        try:
            return cls(ser, port)
        except BaseException:
            ser.close()
            raise

    def close(self) -> None:
        self._ser.close()

    # --- the protocol ---
    def command(self, line: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Answer:
        self._tag += 1
        tag = f"#{self._tag}"
        self._ser.write(f"{tag} {line}\n".encode())
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self._readline(deadline)
            if answer is None:
                raise JigError(f"no answer to {line!r} from the jig on {self.port} within {timeout_s} s")
            head, _, rest = answer.partition(" ")
            if head != tag:
                continue  # a banner, or an answer to a question given up on
            if rest.startswith("OK "):
                text = rest[3:]
                fields = dict(p.split("=", 1) for p in text.split()[1:] if "=" in p)
                return Answer(text.split()[0], fields, text)
            raise JigError(f"jig: {line!r} -> {rest}")

    def _readline(self, deadline: float) -> str | None:
        while b"\n" not in self._buf:
            if time.monotonic() > deadline:
                return None
            self._buf += self._ser.read(self._ser.in_waiting or 1)
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("ascii", "replace").strip()

    # --- capabilities ---
    @property
    def contacts(self) -> dict[str, int]:
        return dict(self.map.get("contacts", {}))

    @property
    def eol(self) -> dict[str, Any]:
        return dict(self.map.get("eol", {}))

    def has(self, what: str) -> bool:
        return what in self.map

    # --- what it drives ---
    def set(self, states: dict[str, str]) -> float:
        """Drives channels (in1=closed, in6=active, ...) in one change; returns the moment of
        the edge on the host's clock (time.time()), from the jig's own stamp."""
        a = self.command("SET " + " ".join(f"{ch}={st}" for ch, st in states.items()))
        return self.host_time(a.edge_us)

    def power(self, on: bool) -> Answer:
        return self.command("POWER on" if on else "POWER off")

    def pulse_en(self, ms: int = 100) -> float:
        return self.host_time(self.command(f"EN pulse {ms}").edge_us)

    def hold(self, line: str, low: bool) -> Answer:
        return self.command(f"{line.upper()} {'low' if low else 'high'}")

    def read(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.command("READ").fields.items() if k not in ("us", "ms") and v.isdigit()}

    # --- its clock on ours ---
    def sync_clock(self) -> float:
        """Pairs the jig's ticks with time.time() (the round trip's midpoint); returns the
        uncertainty in seconds (half the round trip)."""
        t0 = time.time()
        a = self.command("CLOCK")
        t1 = time.time()
        self._clock = (a.edge_us, (t0 + t1) / 2)
        return (t1 - t0) / 2

    def host_time(self, us: int) -> float:
        """A jig tick (µs, wrapping at its period) as time.time(), near the last sync."""
        if self._clock is None:
            self.sync_clock()
        assert self._clock is not None
        ref_us, ref_t = self._clock
        d = (us - ref_us) % self.period
        if d > self.period // 2:
            d -= self.period
        return ref_t + d / 1e6


class SimJig:
    """The jig firmware under the unix port, driving the virtual device in `dut_dir`, on a
    pseudo-terminal whose path `start()` returns (open it with Jig.open, as a real jig's)."""

    def __init__(self, dut_dir: Path, log: Path, wiring: Path = JIG_WIRING) -> None:
        self.dut_dir = Path(dut_dir)
        self.wiring = Path(wiring)
        self.log = Path(log)
        self._proc: subprocess.Popen[bytes] | None = None
        self._slave: int | None = None
        self.path = ""

    def start(self) -> str:
        # The jig reads and writes the pty's master; the slave is its "USB serial port". We keep
        # the slave open too, so that the jig never sees a hang-up between two users.
        master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        env = dict(os.environ, MICROPYPATH=f"{JIG_FIRMWARE}{os.pathsep}.frozen", JIG_WIRING=str(self.wiring),
                   JIG_SIM_DUT=str(self.dut_dir.resolve()))
        with open(self.log, "ab") as err:
            self._proc = subprocess.Popen([micropython_binary(), str(JIG_FIRMWARE / "main.py")], stdin=master,
                                          stdout=master, stderr=err, cwd=self.log.parent, env=env, close_fds=True)
        os.close(master)
        self._slave = slave
        return self.path

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._slave is not None:
            os.close(self._slave)
            self._slave = None

    def __enter__(self) -> SimJig:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()




def main(argv: list[str] | None = None) -> int:
    """`python -m tests.hil.jig DEVICE_DIR`: a simulated jig for a virtual device started with
    `firelink virtual start --dir DEVICE_DIR`, on a pty, until Ctrl-C; talk to it with a
    terminal (`python -m serial.tools.miniterm PTY`) or point the suite at it. Mind that it
    starts in its safe state: the device unpowered until `POWER on`."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m tests.hil.jig", description=main.__doc__)
    p.add_argument("device_dir", type=Path)
    p.add_argument("--wiring", type=Path, default=JIG_WIRING)
    a = p.parse_args(argv)
    if not (a.device_dir / "config.json").exists():
        p.error(f"{a.device_dir} is not a virtual device's directory (no config.json)")
    with SimJig(a.device_dir, a.device_dir / "sim" / "jig.log", wiring=a.wiring) as sim:
        print(f"simulated jig for {a.device_dir} on {sim.path} (Ctrl-C ends it)", flush=True)
        try:
            while sim._proc is not None and sim._proc.poll() is None:
                time.sleep(0.5)
        except KeyboardInterrupt:
            return 0
    print("the jig firmware ended; see", a.device_dir / "sim" / "jig.log")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
