"""The process that plays a board's power supply, reset circuit and USB-serial bridge for a
virtual device: it runs the real firmware under the MicroPython unix port and keeps it on a
serial port (a pseudo-terminal) that outlives the firmware's reboots.

Two pseudo-terminals, because a terminal line discipline only turns Ctrl-C into SIGINT on
its slave side:
  device side  the firmware's stdin/stdout/stderr and controlling terminal. Raw like a UART,
               except that ISIG stays on with ^C as the only signal character, so 0x03 stops
               main.py exactly as the ESP32 port's UART interrupt character does.
  user side    the port a person or mpremote opens (`<dir>/tty` points at it). Raw, no echo.
The supervisor copies bytes between the two masters and appends everything the firmware
prints to `<dir>/console.log`. Nothing is written to the user side while nobody has it open
(the bytes are lost, as they would be on a UART with no listener); they still reach the log.

Why two processes per boot: under `micropython -i main.py`, a `sys.exit(n)` in main.py drops
to the REPL instead of ending the process, so the exit statuses that fl/hal/sim.py uses for
resets would be lost. The supervisor therefore runs `micropython main.py`, and when main.py
ends for any other reason (Ctrl-C, a traceback, a return) starts `micropython` (the REPL) on
the same port with the same directory, which looks exactly like a board dropping to its
REPL. Bytes typed meanwhile (mpremote's ^A after its ^C) wait in the port for the REPL.
Only interpreter state (main.py's globals) does not carry over.

Reboots: exit status 3 (watchdog) and 4 (software reset) start main.py again with
$FL_RESET_CAUSE set to match; status 0 from the REPL (Ctrl-D, a soft reboot on a board)
starts it again with the previous cause, printing "MPY: soft reboot" first. Anything else
the REPL ends with, and a process killed by a signal, powers the device off.

Supply, EN and BOOT lines: `sim/control.json`'s "power" (the supply), "en" and "boot" (line
levels) are read every POLL_MS, all true when absent. A test jig's simulation (jig/jigfw/
hal_sim.py) writes them. Supply off or EN low kills the firmware at once, as a board stops;
the port stays (its USB bridge has its own supply), and the firmware starts again when both are
back, reset cause `power_on` after a supply cut and `hard` after EN, unless BOOT is held low
then: the chip waits in its download mode until the next reset.

Signals: SIGTERM/SIGINT stop cleanly (^C, so the firmware says `offline` and returns; at the
REPL ^C ^D; SIGTERM and SIGKILL only if it does not end in time); SIGUSR1 presses the reset
button (the firmware is killed and boots with cause `hard`).

Files: `sim/supervisor.pid` holds the supervisor's pid and an exclusive flock for as long as
it runs (a stale pid file is never mistaken for a running device); `sim/supervisor.json`
says what is running (pids, pty, boots, last exit).

Started by `firelink.virtual.device.VirtualDevice.start()` as `python -m firelink.virtual.supervisor`,
or in-process by `firelink virtual start --foreground`.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable

from firelink.board import romfs
from firelink.errors import FireLinkError
from firelink.virtual.world import read_json, write_json_atomic

if TYPE_CHECKING:
    from firelink.virtual.modemsim import PathWorld

PIDFILE = "sim/supervisor.pid"
STATEFILE = "sim/supervisor.json"
SUPERVISOR_LOG = "sim/supervisor.log"
CONSOLE_LOG = "console.log"
TTY_LINK = "tty"
# Exit statuses of fl/hal/sim.py's Board.reset(): the cause the next boot reports.
RESET_STATUS = {3: "watchdog", 4: "software"}
SOFT_REBOOT_STATUS = 0
CTRL_C, CTRL_D = b"\x03", b"\x04"
POLL_MS = 50
USER_BUFFER_BYTES = 1 << 20
DEVICE_BUFFER_BYTES = 64 << 10
LOG_ROTATE_BYTES = 8 * 1024 * 1024


class AlreadyRunning(FireLinkError, RuntimeError):
    pass


def _pidfile_lock(path: Path) -> int | None:
    """An fd holding the exclusive lock on the pid file, or None if another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def rotate_console_log(directory: Path) -> None:
    """At power-on only: console.log keeps earlier sessions until it grows past the limit."""
    log = Path(directory) / CONSOLE_LOG
    if log.exists() and log.stat().st_size > LOG_ROTATE_BYTES:
        os.replace(log, log.with_name(CONSOLE_LOG + ".1"))


def _board_termios(fd: int) -> None:
    """The device side of the port: raw like a UART, but ^C raises SIGINT (and only ^C)."""
    attrs = termios.tcgetattr(fd)
    iflag, oflag, cflag, lflag = attrs[0], attrs[1], attrs[2], attrs[3]
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
               | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF)
    oflag &= ~(termios.OPOST | termios.ONLCR)
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
    # ISIG stays: ^C must stop main.py. NOFLSH: a board's UART does not drop queued output
    # when ^C arrives, and neither should the console log.
    lflag |= termios.ISIG | termios.NOFLSH
    cc = attrs[6]
    cc[termios.VINTR] = CTRL_C
    # ^\ and ^Z would kill or freeze the process: a board has no such characters.
    disabled = b"\x00"
    cc[termios.VQUIT] = disabled
    cc[termios.VSUSP] = disabled
    cc[termios.VMIN] = 1
    cc[termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, attrs[4], attrs[5], cc])


def _take_controlling_tty() -> None:
    # Runs in the child between fork and exec: a new session whose controlling terminal is
    # stdin (the device side), so the line discipline's SIGINT reaches the firmware.
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def start_path_world(directory: Path, world: "PathWorld | None" = None) -> "PathWorld | None":
    """A device configured with 4G gets its modem and both paths' fault proxies
    (firelink.virtual.modemsim), for as long as the supervisor runs: the modem and the network are
    outside the chip and outlive its reboots. Asked again at each boot with the world it has:
    provisioning may have turned 4G on or off or moved the broker since (then a new world)."""
    config = read_json(directory / "config.json") or {}
    want = None
    if (config.get("cellular") or {}).get("enabled"):
        broker = config.get("broker") or {}
        want = (str(broker.get("host", "127.0.0.1")), int(broker.get("port", 1883)))
    if world is not None and world.broker == want:
        return world
    control = directory / "sim" / "control.json"
    if world is not None:
        world.close()
        data = read_json(control) or {}
        data.pop("routes", None)  # no proxy behind them any more
        write_json_atomic(control, data)
    if want is None:
        return None
    from firelink.virtual.modemsim import PathWorld
    from firelink.virtual.world import update_json

    world = PathWorld(directory, want, read_json(directory / "board.json"))
    update_json(control, {"routes": world.routes()})
    return world


class Supervisor:
    """Runs one virtual device until it is stopped or powers itself off."""

    def __init__(self, directory: Path, firmware: Path, micropython: str, reset_cause: str = "power_on",
                 restart: bool = True, heapsize: str | None = None, echo: BinaryIO | None = None,
                 parent_pid: int | None = None, stop_timeout_s: float = 8.0,
                 on_ready: Callable[[str], None] | None = None) -> None:
        self.dir = Path(directory).resolve()
        self.firmware = Path(firmware).resolve()
        self.micropython = micropython
        self.reset_cause = reset_cause
        self.restart = restart
        self.heapsize = heapsize
        self.echo = echo
        self.parent_pid = parent_pid
        self.stop_timeout_s = stop_timeout_s
        self.on_ready = on_ready
        self.boots = 0
        self.last_exit: int | None = None
        self._child: subprocess.Popen[bytes] | None = None
        self._stop_requested = False
        self._reset_requested = False
        self._stop_phase: str | None = None
        self._stop_deadline = 0.0
        self._mode = "main"  # or "repl": which process runs now
        self._user_attached = False
        self._user_path = ""
        self._to_user = bytearray()  # device output the port's reader has not taken yet
        self._to_dev = bytearray()  # typed input the firmware has not taken yet
        self._started = time.time()
        self._lines_stamp: tuple[int, int] | None = None
        self._lines = {"power": True, "en": True, "boot": True}
        self._held: str | None = None  # "power_on" | "hard": the supply or EN took the chip down

    # --- lifetime ---
    def run(self) -> int:
        """Blocks until the device is off; returns the firmware's last exit status."""
        (self.dir / "sim").mkdir(parents=True, exist_ok=True)
        lock = None
        for _ in range(20):  # someone may be probing the lock for a moment
            lock = _pidfile_lock(self.dir / PIDFILE)
            if lock is not None:
                break
            time.sleep(0.025)
        if lock is None:
            raise AlreadyRunning(f"a virtual device is already running in {self.dir}")
        os.ftruncate(lock, 0)
        os.write(lock, b"%d\n" % os.getpid())
        rotate_console_log(self.dir)
        self._log = open(self.dir / CONSOLE_LOG, "ab", buffering=0)
        self._dev_master, self._dev_slave = os.openpty()
        self._user_master, user_slave = os.openpty()
        self._user_path = os.ttyname(user_slave)
        tty.setraw(user_slave)
        os.close(user_slave)  # we hold only the master: its POLLHUP says nobody listens
        for fd in (self._dev_master, self._user_master):
            os.set_blocking(fd, False)
        link = self.dir / TTY_LINK
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(self._user_path)
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
        world = start_path_world(self.dir)
        step: tuple[str, str, bool] | None = ("main", self.reset_cause, True)
        self._read_lines()
        if not (self._lines["power"] and self._lines["en"]):
            self._held = "power_on" if not self._lines["power"] else "hard"
            step = self._wait_released(self.reset_cause)
        try:
            while step is not None:
                world = start_path_world(self.dir, world)
                self._start_child(*step)
                if self.on_ready is not None and self.boots == 1 and self._mode == "main":
                    self.on_ready(self._user_path)
                status = self._pump()
                self.last_exit = status
                step = self._next_step(status)
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self._shutdown()
            if world is not None:
                world.close()
            if link.is_symlink() and os.readlink(link) == self._user_path:
                link.unlink()
            self._write_state("stopped")
            os.close(lock)  # releases the flock; the file stays with the last pid, harmlessly
        return self.last_exit if self.last_exit is not None else 0

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum == signal.SIGUSR1:
            self._reset_requested = True
        else:
            self._stop_requested = True

    def _next_step(self, status: int) -> tuple[str, str, bool] | None:
        """(mode, reset cause, fresh boot?) for the next process, or None: the device is off."""
        cause = self.reset_cause
        if self._stop_requested:
            return None
        if self._held is not None:
            return self._wait_released(self._held)
        if self._reset_requested:
            self._reset_requested = False
            self._note("reset button: rebooting, reset cause hard")
            return "main", "hard", True
        if status in RESET_STATUS and self.restart:
            self._note(f"firmware exited with status {status}: rebooting, reset cause {RESET_STATUS[status]}")
            return "main", RESET_STATUS[status], True
        if self._mode == "main" and status >= 0 and status not in RESET_STATUS:
            return "repl", cause, False  # main.py ended: the board's REPL takes over
        if self._mode == "repl" and status == SOFT_REBOOT_STATUS and self.restart:
            self._output(b"MPY: soft reboot\r\n")
            return "main", cause, True
        self._note(f"{'firmware' if self._mode == 'main' else 'REPL'} exited with status {status}: device off")
        return None

    def _start_child(self, mode: str, cause: str, fresh: bool) -> None:
        _board_termios(self._dev_slave)
        if fresh:  # nothing typed before a reboot reaches the new firmware
            termios.tcflush(self._dev_slave, termios.TCIFLUSH)
            self._to_dev.clear()
        env = dict(os.environ)
        env["FL_RESET_CAUSE"] = cause
        env["MICROPYPATH"] = os.pathsep.join([str(self.firmware), ".frozen"])
        argv = [self.micropython]
        if self.heapsize:
            argv += ["-X", "heapsize=" + self.heapsize]
        image = romfs.rom_image_of(self.firmware)
        if image is not None:  # a ROM build: its fl/ mapped and mounted at /rom as on the board
            argv = [sys.executable, "-m", "firelink.virtual.romrun", str(image), mode, *argv[1:]]
        elif mode == "repl":
            pass  # no script: the friendly REPL, with its banner
        elif (self.firmware / "main.py").exists():
            argv.append(str(self.firmware / "main.py"))
        else:  # a build of .mpy files only
            argv += ["-c", "import main"]
        self._child = subprocess.Popen(argv, stdin=self._dev_slave, stdout=self._dev_slave,
                                       stderr=self._dev_slave, cwd=self.dir, env=env,
                                       preexec_fn=_take_controlling_tty, close_fds=True,
                                       # The board's flash is its own: what the firmware or
                                       # provisioning writes there (secrets.json, keys) is 0600.
                                       umask=0o077)
        self._mode = mode
        if mode == "main":
            self.boots += 1
        self.reset_cause = cause
        self._write_state("running")

    def _shutdown(self) -> None:
        if self._child is not None and self._child.poll() is None:
            self._child.kill()
            self._child.wait()
        self._drain()
        for fd in (self._dev_master, self._dev_slave, self._user_master):
            os.close(fd)
        self._log.close()

    # --- the bridge ---
    def _pump(self) -> int:
        """Copies bytes until the firmware process ends; returns its exit status."""
        assert self._child is not None
        poller = select.poll()
        self._user_attached = False
        last_user_check = 0.0
        while True:
            now = time.monotonic()
            if now - last_user_check >= POLL_MS / 1000:
                last_user_check = now
                self._check_user()
            poller.register(self._dev_master, select.POLLIN | (select.POLLOUT if self._to_dev else 0))
            watching_user = self._user_attached  # never while hung up: POLLHUP would spin
            if watching_user:
                poller.register(self._user_master, select.POLLIN | (select.POLLOUT if self._to_user else 0))
            for fd, ev in poller.poll(POLL_MS):
                if fd == self._dev_master:
                    if ev & select.POLLIN:
                        self._drain()
                    if ev & select.POLLOUT:
                        self._flush_dev()
                else:
                    if ev & select.POLLIN:
                        self._from_user()
                    if ev & select.POLLOUT:
                        self._flush_user()
                    if ev & (select.POLLHUP | select.POLLERR):
                        self._detach_user()
            if watching_user:
                poller.unregister(self._user_master)
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                self._stop_requested = True
            self._advance_stop()
            if self._reset_requested and self._child.poll() is None:
                self._child.kill()
            if self._read_lines() and not (self._lines["power"] and self._lines["en"]):
                self._held = "power_on" if not self._lines["power"] else "hard"
                if self._child.poll() is None:
                    self._child.kill()  # nothing flushed: the chip just stops
                self._note("supply off: device unpowered" if self._held == "power_on" else "EN low: held in reset")
            status = self._child.wait() if self._child.poll() is not None else None
            if status is not None:
                self._drain()
                return status

    # --- the supply, EN and BOOT lines (a test jig's) ---
    def _read_lines(self) -> bool:
        """Re-reads the lines from sim/control.json when it changed; True if it did."""
        path = self.dir / "sim" / "control.json"
        try:
            st = path.stat()
        except OSError:
            return False
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._lines_stamp:
            return False
        self._lines_stamp = stamp
        doc = read_json(path) or {}
        self._lines = {k: doc.get(k, True) is not False for k in ("power", "en", "boot")}
        return True

    def _wait_released(self, cause: str) -> tuple[str, str, bool] | None:
        """Waits, the port still open, until the supply is on and EN high; returns the boot
        to make, or None if stopped meanwhile."""
        self._write_state("unpowered" if cause == "power_on" else "reset")
        download = False
        while not self._stop_requested:
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                break
            self._check_user()
            if self._user_attached:
                while self._from_user():  # nobody is listening on the device side
                    pass
                self._to_dev.clear()
            changed = self._read_lines()
            up = self._lines["power"] and self._lines["en"]
            if changed and not up:
                if not self._lines["power"]:
                    cause = "power_on"
                if download:  # a new reset: BOOT is sampled again at its release
                    download = False
                    self._write_state("unpowered" if cause == "power_on" else "reset")
            elif up and not download:
                if not self._lines["boot"]:
                    download = True
                    self._write_state("download")
                    self._note("BOOT low at reset: download mode, firmware not started")
                else:
                    self._held = None
                    self._note(f"booting, reset cause {cause}")
                    return "main", cause, True
            time.sleep(POLL_MS / 1000)
        return None

    def _drain(self) -> None:
        while True:
            try:
                data = os.read(self._dev_master, 4096)
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno == errno.EIO:
                    return
                raise
            if not data:
                return
            self._output(data)

    def _output(self, data: bytes) -> None:
        self._log.write(data)
        if self.echo is not None:
            self.echo.write(data)
            self.echo.flush()
        if self._user_attached:
            # Held for a slow reader (mpremote reads a byte at a time), within reason.
            self._to_user += data[:max(0, USER_BUFFER_BYTES - len(self._to_user))]
            self._flush_user()

    def _flush_user(self) -> None:
        try:
            n = os.write(self._user_master, self._to_user) if self._to_user else 0
        except BlockingIOError:
            return
        except OSError:  # they left
            n = len(self._to_user)
        del self._to_user[:n]

    def _note(self, text: str) -> None:
        # Like the ESP32 boot ROM's reset lines: on the port and in the log, marked as ours.
        self._output(b"\r\n[virtual] " + text.encode() + b"\r\n")

    def _from_user(self) -> bool:
        try:
            data = os.read(self._user_master, 4096)
        except OSError:  # EAGAIN, or EIO once the last opener has gone and nothing is left
            return False
        if not data:
            return False
        if self._stop_phase is None:  # between main.py and the REPL, bytes wait in the port
            # Beyond the limit the firmware is not reading: an overrun UART drops bytes too.
            self._to_dev += data[:max(0, DEVICE_BUFFER_BYTES - len(self._to_dev))]
            self._flush_dev()
        return True

    def _flush_dev(self) -> None:
        try:
            n = os.write(self._dev_master, self._to_dev) if self._to_dev else 0
        except BlockingIOError:
            return
        del self._to_dev[:n]

    def _hung_up(self) -> bool:
        """Nobody has the port open now."""
        probe = select.poll()
        probe.register(self._user_master, select.POLLIN)
        return any(ev & select.POLLHUP for _, ev in probe.poll(0))

    def _check_user(self) -> None:
        """Attaches the user side when someone has opened it; detaches when they left."""
        hung_up = self._hung_up()
        if hung_up and self._user_attached:
            self._detach_user()
        elif not hung_up and not self._user_attached:
            self._user_attached = True

    def _detach_user(self) -> None:
        if not self._user_attached:
            return
        while self._from_user():  # what they wrote just before closing still counts
            pass
        self._user_attached = False
        self._to_user.clear()
        if not self._hung_up():
            # The next user opened the port already (a busy machine notices the hang-up late):
            # it is theirs, in the mode they set. Resetting or flushing it now would discard
            # what they are about to read (pyserial then sees "readiness to read but returned
            # no data"), and output meanwhile must reach them.
            self._user_attached = True
            return
        # Whoever had the port may have left it echoing; echo would send our own output back
        # to the firmware as input the moment a program that does not set raw mode opens it.
        # No flush: someone opening the port this instant keeps what it is sent.
        try:
            fd = os.open(self._user_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return
        try:
            tty.setraw(fd)
        finally:
            os.close(fd)

    # --- clean stop: ^C (and ^D at the REPL), then wait ---
    def _advance_stop(self) -> None:
        assert self._child is not None
        now = time.monotonic()
        if self._stop_requested and self._stop_phase is None:
            self._stop_phase = "interrupt"
            self._stop_deadline = now + self.stop_timeout_s
            # main.py: ^C lets the firmware say `offline` and return. The REPL: ^C abandons
            # any line or running command, ^D then ends it (raw or friendly REPL alike).
            self._write_dev(CTRL_C if self._mode == "main" else CTRL_C + CTRL_D)
        elif self._stop_phase == "interrupt" and now > self._stop_deadline:
            self._note("still running after ^C: terminating it")
            self._stop_phase = "terminate"
            self._stop_deadline = now + 2.0
            self._child.terminate()
        elif self._stop_phase == "terminate" and now > self._stop_deadline:
            self._child.kill()

    def _write_dev(self, data: bytes) -> None:
        try:
            os.write(self._dev_master, data)
        except OSError:
            pass

    # --- files ---
    def _write_state(self, state: str) -> None:
        child = self._child
        write_json_atomic(self.dir / STATEFILE, {
            "state": state,
            "pid": os.getpid(),
            "firmware_pid": child.pid if child is not None and state == "running" else None,
            "tty": self._user_path,
            "mode": self._mode,
            "boots": self.boots,
            "reset_cause": self.reset_cause,
            "last_exit": self.last_exit,
            "started": self._started,
            "firmware": str(self.firmware),
            "restart": self.restart,
        })



def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m firelink.virtual.supervisor",
                                description="run one virtual FireLink device (used by `firelink virtual`)")
    p.add_argument("dir", type=Path)
    p.add_argument("--firmware", type=Path, required=True)
    p.add_argument("--micropython", required=True)
    p.add_argument("--reset-cause", default="power_on")
    p.add_argument("--no-restart", action="store_true")
    p.add_argument("--heapsize")
    p.add_argument("--parent-pid", type=int, help="stop when this process is no longer our parent")
    p.add_argument("--stop-timeout", type=float, default=8.0)
    a = p.parse_args(argv)
    sup = Supervisor(a.dir, a.firmware, a.micropython, reset_cause=a.reset_cause, restart=not a.no_restart,
                     heapsize=a.heapsize, parent_pid=a.parent_pid, stop_timeout_s=a.stop_timeout)
    try:
        sup.run()
    except AlreadyRunning as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
