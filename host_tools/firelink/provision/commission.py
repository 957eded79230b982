"""`provision()`: from a flashed board on a USB cable to a commissioned transmitter the centre sees.

Each step is a check in the commissioning report (report.CHECKS) and a step on the reporter:

 1. settings      every value checked, and the port and the site's CA looked for, before any I/O
 2. broker        the centre's password matches the broker's monitor account (checked against its
                  hash: logging in as the monitor would displace the running monitor), and the broker
                  answers and accepts provisioning's own centre account for this run (removed at the
                  end) (the board is not touched yet)
 3. board         Ctrl-C to the raw REPL (device.py); MicroPython and the FireLink app present; MAC
                  read through the firmware's own HAL; device id `fl-<mac hex>`
 4. configuration credentials generated (password; client certificate from the site CA), config.json
                  staged and checked by the firmware's own validator (`fl.config.validate`) on the board
 5. files         secrets.json and the DER files staged, each hash-checked, then all renamed into place
                  in one command (config.json last), hashes checked again, and `fl.config.load` run on
                  the board must report no problem
 6. registration  the broker's password file and ACL get the account (a re-provisioned board's old
                  credential is replaced: it stops working), the certificate is kept without its key
                  (the key lives on the board only), a running mosquitto is told to reload, the
                  inventory gets the row with the certificate's end date
 7. online        the board is rebooted; a live (not retained) `online` status must arrive in time
 8. heartbeat     its first heartbeat: input states, link, signal; no active health fault
 9. test alarm    `{"cmd": "test"}` on its cmd topic makes the firmware record a 601 event; the event
                  and the centre's `ack` for it must arrive in time; the round trip is measured
10. 4g            with 4G on: a heartbeat over 4G reaches the broker (the backup test at boot, or the
                  session itself on a site without Wi-Fi) and no modem or backup fault comes first; the
                  modem's health (signal, operator, band, ICCID, IMEI, ...) from the `status` command

Until step 5 renames the files, the board keeps its previous files byte for byte: any failure, an
interruption or a lost cable leaves at most `*.tmp` files beside them (removed when the board still
answers), and the board is rebooted back into its app. The broker and the inventory change only after
the board holds the new files. A failure raises ProvisionError carrying the result; the report is
written whenever the board was identified, pass or fail.
"""
from __future__ import annotations

import secrets
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from firelink.board.console_tap import ConsoleTap
from firelink.board.device import Device, DeviceError, DeviceLost, DeviceTimeout
from firelink.board.ports import PortError, check_port
from firelink.centre.watch import BrokerRefused, CentreError, CentreWatch, TLSFiles
from firelink.errors import FireLinkError
from firelink.progress import Reporter
from firelink.provision import board
from firelink.provision import report
from firelink.provision.report import FAIL, PASS, CommissioningResult, TestAlarm, utc_iso
from firelink.provision.settings import Settings, SettingsError, check
from firelink.site import pki
from firelink.site.broker import CENTRE_PREFIX, Broker, BrokerError, acl_text
from firelink.site.inventory import Inventory, InventoryError, installer_name

MONITOR_USER = "monitor"
REMOTE_INTERVAL_S = 1.1  # the board runs one remote command a second (fl/remote.py MIN_INTERVAL_MS)


@dataclass(frozen=True)
class Timeouts:
    broker_s: float = 10.0  # connect and CONNACK; each subscription; each publish
    online_s: float = 45.0  # reboot -> live `online` (a board joins Wi-Fi, then TLS)
    heartbeat_s: float = 20.0  # `online` -> first heartbeat
    command_s: float = 15.0  # test command -> the board's answer and its event
    ack_s: float = 30.0  # test event -> the centre's ack
    cellular_s: float = 150.0  # `online` -> a heartbeat over 4G (modem boot ~11 s, registration up to 120 s)


class ProvisionError(FireLinkError):
    """Provisioning stopped; the message names the failed check and what to do. `result` holds
    every check so far (and the report's paths when one was written)."""

    def __init__(self, message: str, result: CommissioningResult, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.problems = problems or [message]  # one line each (several when settings were refused)


class _Failed(Exception):
    """A check failed for a reason found here (not raised by a library)."""


def provision(port: str, site: str, wifi_ssid: str | None, wifi_password: str, broker_url: str, *,
              broker: Broker, inventory: Inventory, monitor_password: str | None,
              monitor_user: str = MONITOR_USER, apn: str | None = None, cellular: bool = False,
              inputs: object = None, installer: str | None = None, reports_dir: Path = report.DEFAULT_DIR,
              reporter: Reporter | None = None, timeouts: Timeouts = Timeouts(),
              replace_config: bool = False) -> CommissioningResult:
    """Provisions and commissions the board on `port`; see the module docstring. Returns the
    result when every check passed, else raises ProvisionError (KeyboardInterrupt passes through
    after the board is put back and the report written). wifi_ssid None: a site without Wi-Fi
    (4G alone); cellular or an APN: 4G on."""
    run = _Run(port, broker, inventory, monitor_user, monitor_password, reporter or Reporter(), timeouts,
               reports_dir, CommissioningResult(site=site, broker_url=broker_url, wifi_ssid=wifi_ssid,
                                                installer=installer_name(installer), started_utc=utc_iso(),
                                                port=port, apn=apn, cellular=cellular or apn is not None))
    return run.go(wifi_password, inputs, replace_config)


class _Run:
    """One provisioning attempt: the steps, and what to undo when one fails."""

    def __init__(self, port: str, broker: Broker, inventory: Inventory, monitor_user: str,
                 monitor_password: str | None, reporter: Reporter, timeouts: Timeouts, reports_dir: Path,
                 result: CommissioningResult) -> None:
        self.port = port
        self.broker = broker
        self.inventory = inventory
        self.monitor_user = monitor_user
        self.monitor_password = monitor_password
        self.reporter = reporter
        self.timeouts = timeouts
        self.reports_dir = reports_dir
        self.result = result
        self.started = time.monotonic()
        self.device: Device | None = None
        self.staged: list[str] = []
        self.committed = False
        self.tap: ConsoleTap | None = None
        self._online_at = 0.0
        self._kept: list[str] = []

    # --- the steps ---
    def go(self, wifi_password: str, inputs: object, replace_config: bool) -> CommissioningResult:
        r = self.result
        try:
            with ExitStack() as stack:
                with self._check("settings", "check the settings") as c:
                    settings = self._settings(wifi_password, inputs)
                    c.detail = f"broker {settings.broker}, " + (
                        f"Wi-Fi {settings.wifi_ssid!r}" if settings.wifi_ssid is not None else "no Wi-Fi (4G alone)") + (
                        f", APN {settings.apn}" if settings.apn else ", 4G (APN from the SIM)" if settings.cellular else "")
                with self._check("broker", f"check the {self.monitor_user!r} account and connect to the broker") as c:
                    watch = stack.enter_context(self._connect(settings, stack))
                    c.detail = f"{self.monitor_user!r} password matches; {settings.broker} accepts {watch.username!r}"
                with self._check("board", f"open the board on {self.port}") as c:
                    old_config = self._identify()
                    c.detail = f"{r.device_id}: FireLink {r.firmware} on {r.platform}, MicroPython {r.micropython}"
                with self._check("configuration", "generate credentials") as c:
                    password, cred = self._credentials()
                    config = self._config(settings, old_config, replace_config)
                    self.reporter.start("check config.json with the firmware's validator")
                    r.inputs = self._validate(config)
                    c.detail = f"{len(r.inputs)} inputs; accepted by fl.config on the board"
                with self._check("files", None) as c:
                    files = self._files(settings, password, cred, config)
                    self._write(files)
                    c.detail = f"{len(files)} files in place, sha256 checked; fl.config.load: no problem"
                with self._check("registration", "register with the broker and the inventory") as c:
                    c.detail = self._register(password, cred, settings, watch)
                with self._check("online", "restart the board") as c:
                    c.detail = self._online(watch)
                with self._check("heartbeat", "wait for the first heartbeat") as c:
                    c.detail = self._heartbeat(watch)
                with self._check("test alarm", "send a test alarm (601) and wait for the centre's ack") as c:
                    c.detail = self._test_alarm(watch)
                if settings.cellular:
                    with self._check("4g", "wait for a heartbeat over 4G and read the modem's health") as c:
                        c.detail = self._cellular(watch)
                else:
                    r.check("4g").status, r.check("4g").detail = report.NOT_USED, "4G not configured"
        except BaseException as e:
            self._after_failure(e)
            raise self._error(e) from e
        finally:
            if self.tap is not None:
                self.tap.close()
        self._finish()
        return r

    @contextmanager
    def _check(self, name: str, title: str | None) -> Iterator[report.Check]:
        """A check of the report; `title` starts its first step on the reporter (None: the check's
        code starts its own steps)."""
        c = self.result.check(name)
        if title is not None:
            self.reporter.start(title)
        try:
            yield c
        except BaseException as e:
            c.status = FAIL
            c.detail = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else _message(e)
            raise
        c.status = PASS
        self.reporter.finish(c.detail)

    def _settings(self, wifi_password: str, inputs: object) -> Settings:
        r = self.result
        problems: list[str] = []
        try:
            settings = check(r.site, r.wifi_ssid, wifi_password, r.broker_url, r.apn, inputs, r.cellular)
        except SettingsError as e:
            problems += e.problems
            settings = None
        try:
            check_port(self.port)
        except PortError as e:
            problems.append(f"--port: {e}")
        if not (self.broker.pki_dir / "ca.crt").exists():
            problems.append(f"--broker-dir: no site CA in {self.broker.pki_dir}: give the site broker's "
                            f"directory (`firelink broker --dir {self.broker.dir}` creates it on first start)")
        if not self.monitor_password:
            problems.append("--monitor-password: needed to watch the board come online as the centre "
                            "(or set $FL_MONITOR_PASS)")
        if problems:
            raise SettingsError(problems)
        assert settings is not None
        r.broker_url = str(settings.broker)
        for w in settings.warnings:
            self._warn(w)
        return settings

    def _connect(self, settings: Settings, stack: ExitStack) -> CentreWatch:
        """The broker binds each client id to its account, so logging in as the monitor would
        throw the running monitor off (and a clean session would wipe its queue): provisioning
        checks the monitor's password against the broker's hash and watches with an account of
        its own, made for this run and removed at its end."""
        if not self.broker.check_password(self.monitor_user, str(self.monitor_password)):
            raise _Failed(f"the broker's {self.monitor_user!r} account refuses this password: check "
                          "--monitor-password (or $FL_MONITOR_PASS)")
        name = f"{CENTRE_PREFIX}provision-{secrets.token_hex(4)}"
        try:
            account = self.broker.add_centre(name)
        except BrokerError as e:
            raise _Failed(f"cannot add provisioning's own broker account: {e}") from None
        stack.callback(self._drop_account, name)
        tls = None
        if settings.broker.tls:
            # The TLS listener takes the account from the certificate's CN: one for this run only.
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="firelink-provision-")))
            own = pki.make_client(self.broker.ca(), name)
            _write_private(tmp / "client.crt", own.cert_pem)
            _write_private(tmp / "client.key", own.key_pem)
            tls = TLSFiles(self.broker.pki_dir / "ca.crt", tmp / "client.crt", tmp / "client.key")
        deadline = time.monotonic() + self.timeouts.broker_s
        wait = self.timeouts.broker_s
        while True:  # the broker may still be re-reading its password file
            watch = CentreWatch(settings.broker, name, account.password, tls,
                                refused_hint=f": is --broker-dir ({self.broker.dir}) the directory this broker runs from?")
            try:
                watch.connect(wait)
                return watch
            except BrokerRefused:
                watch.close()
                if time.monotonic() + 0.1 >= deadline:
                    raise
                time.sleep(0.1)
                wait = max(0.5, deadline - time.monotonic())

    def _drop_account(self, name: str) -> None:
        try:
            self.broker.remove_account(name)
        except (BrokerError, OSError) as e:
            self._warn(f"could not remove provisioning's broker account {name!r}: {e}; "
                       f"`firelink broker --dir {self.broker.dir}` lists it in accounts.json")

    def _identify(self) -> dict[str, Any] | None:
        """Opens the board, reads what it is; returns its current config.json if it has one."""
        r = self.result
        self.device = device = Device.open(self.port)
        who = board.identify(device)
        r.platform, r.micropython, r.firmware = who.platform, who.micropython, who.firmware
        r.mac, r.device_id = who.mac_text, who.device_id
        known = self.inventory.find(r.device_id)
        if known is not None:
            self.reporter.info(f"{r.device_id} was provisioned on {known.provisioned_at} by {known.provisioned_by} "
                               f"for {known.site!r} ({known.state}); its credential will be replaced")
        old, problem = board.current_config(device)
        if problem:
            self._warn(problem)
        was = (old or {}).get("device_id")
        if isinstance(was, str) and was != r.device_id and was in self.broker.usernames():
            how = f"firelink devices revoke {was}" if self.inventory.find(was) is not None \
                else f"firelink broker --dir {self.broker.dir} --revoke {was}"
            self._warn(f"the board was configured as {was!r}, which still has a broker account; it becomes "
                       f"{r.device_id}. If nothing else uses {was!r}: `{how}`")
        return old

    def _credentials(self) -> tuple[str, pki.Credential]:
        r = self.result
        assert r.device_id is not None
        password = secrets.token_urlsafe(24)
        cred = pki.make_client(self.broker.ca(), r.device_id)
        r.cert_fingerprint = cred.fingerprint
        return password, cred

    def _config(self, settings: Settings, old: dict[str, Any] | None, replace: bool) -> dict[str, Any]:
        r = self.result
        config, self._kept = board.build_config(
            str(r.device_id), settings.site, settings.broker.host, settings.broker.port, settings.broker.tls,
            settings.wifi_ssid, settings.apn, settings.inputs,
            f"written by firelink provision on {r.started_utc} for {r.installer}", None if replace else old,
            cellular=settings.cellular)
        if self._kept:
            self.reporter.info(f"kept from the board's previous config.json: {', '.join(self._kept)} "
                               "(--replace-config to start afresh)")
        return config

    def _validate(self, config: dict[str, Any]) -> list[dict[str, Any]]:
        device = self._device()
        data = board.json_bytes(config)
        self.staged.append("config.json")
        device.stage_file("config.json", data)
        inputs, problems = board.check_staged_config(device, data, str(self.result.device_id))
        if problems:
            from_old = [k for k in self._kept if any(f"config.json: {k}" in p for p in problems)]
            hint = f" ({', '.join(from_old)} kept from the board's previous config.json: --replace-config " \
                "starts afresh)" if from_old else ""
            raise _Failed("the firmware refuses the new configuration: " + "; ".join(problems) + hint)
        return inputs

    def _files(self, settings: Settings, password: str, cred: pki.Credential,
               config: dict[str, Any]) -> dict[str, bytes]:
        secret = board.secrets_doc(str(self.result.device_id), password, settings.wifi_password)
        return {"ca.der": self.broker.ca().cert_der, "device.der": cred.cert_der, "device.key.der": cred.key_der,
                "secrets.json": board.json_bytes(secret), "config.json": board.json_bytes(config)}

    def _write(self, files: dict[str, bytes]) -> None:
        device = self._device()
        todo = [name for name in board.COMMIT_ORDER if name not in self.staged]
        self.reporter.start("write secrets and certificates", total=sum(len(files[n]) for n in todo), unit="B")
        for name in todo:
            self.staged.append(name)
            device.stage_file(name, files[name], on_chunk=self.reporter.advance)
        self.reporter.start("put the files in place")
        self.result.changed_board = True  # from here on the board may hold some of the new files
        device.commit(list(board.COMMIT_ORDER))
        self.committed = True
        self.staged = []
        self.reporter.start("check the files on the board")
        problems = board.check_installed(device, {n: files[n] for n in board.COMMIT_ORDER})
        if problems:
            raise _Failed("the firmware reports problems with the installed files: " + "; ".join(problems))

    def _register(self, password: str, cred: pki.Credential, settings: Settings, watch: CentreWatch) -> str:
        r = self.result
        device_id = str(r.device_id)
        # The certificate only: the key is on the board and nowhere else.
        self.broker.save_device_cert(device_id, cred, keep_key=False)
        self.broker.add_account(device_id, password, rotate=True)
        if device_id not in self.broker.usernames():
            raise _Failed(f"{device_id} is not in the broker's password file after adding it")
        missing = _acl_missing(self.broker, device_id)
        if missing:
            raise _Failed(missing)
        reloaded = self.broker.last_reload
        for p in reloaded.problems:
            self._warn(p)
        if not reloaded.signalled:
            self._warn(f"no running mosquitto found for {self.broker.dir} on this machine: the board can connect "
                       "once the broker (re)starts or reloads its password file")
        else:
            self._login(watch, device_id, password, cred)
        self.inventory.record_provisioned(device_id, str(r.mac), r.site, r.inputs, r.firmware,
                                          str(r.cert_fingerprint), r.installer, r.broker_url,
                                          cert_not_after=f"{pki.not_after(cred.cert_der):%Y-%m-%dT%H:%M:%SZ}")
        watch.watch(device_id, self.timeouts.broker_s)
        how = f"the broker accepts it (mosquitto pid {', '.join(map(str, reloaded.signalled))} reloaded)" \
            if reloaded.signalled else "no running mosquitto to reload"
        return f"account {device_id} added, ACL covers firelink/{device_id}/#, {how}; inventory updated"

    def _login(self, watch: CentreWatch, device_id: str, password: str, cred: pki.Credential) -> None:
        """Logs in with the new account until the reloaded broker accepts it, so the board's first
        connection after its reboot is not refused. Over TLS the account is the certificate's, so
        the probe presents the board's new certificate (from memory, via a private temporary
        directory removed at once)."""
        deadline = time.monotonic() + self.timeouts.broker_s
        with tempfile.TemporaryDirectory(prefix="firelink-provision-") as tmp:
            tls = None
            if watch.tls is not None:
                _write_private(Path(tmp) / "device.crt", cred.cert_pem)
                _write_private(Path(tmp) / "device.key", cred.key_pem)
                tls = TLSFiles(watch.tls.ca, Path(tmp) / "device.crt", Path(tmp) / "device.key")
            self._login_until(watch, device_id, password, tls, deadline)

    def _login_until(self, watch: CentreWatch, device_id: str, password: str, tls: TLSFiles | None,
                     deadline: float) -> None:
        while True:
            probe = CentreWatch(watch.url, device_id, password, tls)
            try:
                probe.connect(max(0.5, deadline - time.monotonic()))
                probe.close()
                return
            except BrokerRefused as e:
                if time.monotonic() + 0.1 >= deadline:
                    raise _Failed(f"the broker still refuses the new account after {self.timeouts.broker_s:g} s "
                                  f"({e}): is --broker-dir the directory this broker runs from?") from None
                time.sleep(0.1)

    def _online(self, watch: CentreWatch) -> str:
        r = self.result
        device = self._device()
        since = time.monotonic()
        device.reboot()
        self.device = None
        try:
            self.tap = ConsoleTap(self.port)
        except (OSError, ValueError) as e:  # a board with native USB re-enumerates after a reset
            self._warn(f"cannot listen to the board's console after the reboot ({e})")
        self.reporter.start(f"wait for {r.device_id} to come online (at most {self.timeouts.online_s:g} s)")
        seen = watch.wait_for(lambda s: s.kind == "status" and not s.retained and s.doc.get("state") == "online",
                              self.timeouts.online_s, since)
        if seen is None:
            raise _Failed(f"no `online` from {r.device_id} within {self.timeouts.online_s:g} s after the reboot"
                          + self._console_hint())
        doc = seen.doc
        r.reset_cause = _str(doc.get("reset"))
        if doc.get("safe_mode"):
            raise _Failed("the board came online in SAFE MODE (its last boots failed): see its console")
        if doc.get("fw") != r.firmware:
            self._warn(f"the board says firmware {doc.get('fw')!r} in its status, {r.firmware!r} on its REPL")
        self._online_at = seen.at
        return f"online {seen.at - since:.1f} s after the reboot (firmware {doc.get('fw')}, reset {r.reset_cause})"

    def _heartbeat(self, watch: CentreWatch) -> str:
        r = self.result
        seen = watch.wait_for(lambda s: s.kind == "heartbeat", self.timeouts.heartbeat_s, self._online_at)
        if seen is None:
            raise _Failed(f"no heartbeat within {self.timeouts.heartbeat_s:g} s of `online`" + self._console_hint())
        hb = seen.doc
        r.input_states = {str(k): str(v) for k, v in _dict(hb.get("inputs")).items()}
        link = _dict(hb.get("link"))
        r.link_path = _str(link.get("path"))
        r.signal_dbm = _int(link.get("signal_dbm"))
        r.battery_mv = _int(hb.get("battery_mv"))
        r.mains = _str(hb.get("mains"))
        r.faults = {str(k): str(v) for k, v in _dict(hb.get("faults")).items()}
        odd = {n: s for n, s in r.input_states.items() if s != "normal"}
        if odd:
            self._warn("inputs not in their normal state: " + ", ".join(f"{n} {s}" for n, s in odd.items())
                       + " (check the wiring and the panel before leaving the site)")
        if report.signal_quality(r.link_path, r.signal_dbm) == "poor":
            self._warn(f"poor signal on {r.link_path}: {r.signal_dbm} dBm")
        if r.faults:
            raise _Failed("the board reports faults: " + "; ".join(f"{k} ({v})" if v else k for k, v in r.faults.items()))
        return (f"{len(r.input_states)} inputs reported ({len(r.input_states) - len(odd)} normal); "
                f"{report._signal_text(r)}")

    def _test_alarm(self, watch: CentreWatch) -> str:
        r = self.result
        device_id = str(r.device_id)
        ref = "prov-" + secrets.token_hex(4)
        sent = watch.publish_cmd(device_id, {"cmd": "test", "id": ref}, self.timeouts.broker_s)
        answer = watch.wait_for(lambda s: s.kind == "cmd_result" and s.doc.get("id") == ref,
                                self.timeouts.command_s, sent)
        if answer is None:
            raise _Failed(f"the board did not answer the test command within {self.timeouts.command_s:g} s: its "
                          f"firmware (FireLink {r.firmware}) may predate remote commands; update it with "
                          f"`firelink flash --port {self.port} --app-only`" + self._console_hint())
        if answer.doc.get("ok") is not True or not isinstance(answer.doc.get("event"), str):
            raise _Failed(f"the board refused the test command: {answer.doc.get('error') or answer.doc}")
        event_id = answer.doc["event"]
        event = watch.wait_for(lambda s: s.kind == "event" and s.doc.get("id") == event_id,
                               self.timeouts.command_s, sent)
        if event is None:
            raise _Failed(f"the board recorded test event {event_id} but it did not reach the broker within "
                          f"{self.timeouts.command_s:g} s" + self._console_hint())
        ack = watch.wait_for(lambda s: s.kind == "ack" and s.doc.get("id") == event_id, self.timeouts.ack_s, sent)
        if ack is None:
            raise _Failed(f"the centre did not acknowledge test event {event_id} within {self.timeouts.ack_s:g} s: "
                          "is the monitoring centre (`firelink monitor`) running and connected to this broker?")
        ts = event.doc.get("ts")
        r.test_alarm = TestAlarm(
            event_id=event_id, seq=_int(event.doc.get("seq")), at_utc=utc_iso(event.wall), device_ts=_int(ts),
            device_clock_synced=event.doc.get("tsync") is True,
            record_ms=(event.at - sent) * 1000, ack_ms=(ack.at - event.at) * 1000, round_trip_ms=(ack.at - sent) * 1000)
        return f"event {event_id} acknowledged by the centre; round trip {r.test_alarm.round_trip_ms:.0f} ms"

    def _cellular(self, watch: CentreWatch) -> str:
        """The 4G result: proof that 4G carries the device's messages to the broker (a heartbeat
        over it: the backup test's at boot, or any on a site without Wi-Fi), unless a modem or
        backup fault comes first; then the modem's whole health from the `status` command."""
        r = self.result
        wait_s = self.timeouts.cellular_s

        def proof(s: Any) -> bool:
            if s.kind == "heartbeat":
                return _dict(s.doc.get("link")).get("path") == "cellular"
            return s.kind == "event" and s.doc.get("q") == "new" and s.doc.get("code") in ("352", "353")

        seen = watch.wait_for(proof, wait_s, self._online_at)
        self._cell_status(watch)
        state = report.cell_text(r)
        if seen is None:
            raise _Failed(f"no heartbeat over 4G within {wait_s:g} s of `online` (modem: {state})"
                          + self._console_hint())
        if seen.kind == "event":
            d = seen.doc
            raise _Failed(f"4G fault {d.get('code')} {d.get('input')}: {d.get('detail') or '-'} (modem: {state})")
        if report.cell_quality(r.cell) == "poor":
            self._warn(f"poor 4G signal: {state}")
        return f"a heartbeat over 4G reached the broker; {state}"

    def _cell_status(self, watch: CentreWatch) -> None:
        """The board's `status` (the heartbeat's payload in full) for the report's 4G row. The
        board takes one command a second (fl/remote.py): a `busy` refusal, right after the test
        alarm's command, is asked again once that second has passed. One left unanswered within its
        wait is asked again too: the board resends an answer that met the backup test's session
        move (fl/commands.py), which can take longer than one wait."""
        r = self.result
        wait_s = max(2.0, self.timeouts.command_s / 3)
        for attempt in range(3):
            ref = "prov-" + secrets.token_hex(4)
            sent = watch.publish_cmd(str(r.device_id), {"cmd": "status", "id": ref}, self.timeouts.broker_s)
            answer = watch.wait_for(lambda s: s.kind == "cmd_result" and s.doc.get("id") == ref, wait_s, sent)
            if answer is None:
                if attempt < 2:
                    continue
                self._warn(f"the board did not answer `status` in 3 tries ({wait_s:g} s each): "
                           "the report's 4G row is from its heartbeats only")
                return
            if answer.doc.get("ok") is True:
                break
            error = str(answer.doc.get("error") or "refused")
            if not error.startswith("busy") or attempt == 2:
                self._warn(f"the board refused `status` ({error}): the report's 4G row is from its heartbeats only")
                return
            time.sleep(REMOTE_INTERVAL_S)
        link = _dict(_dict(answer.doc.get("status")).get("link"))
        r.cell = _dict(link.get("cell"))
        r.cell_paths = {str(k): str(v) for k, v in _dict(link.get("paths")).items()}

    # --- endings ---
    def _finish(self) -> None:
        r = self.result
        r.finished_utc = utc_iso()
        r.seconds = time.monotonic() - self.started
        self.reporter.start("write the report")
        path = report.save(r, self.reports_dir)
        self.inventory.record_result(str(r.device_id), True, "pass", r.installer, report=path)
        self.reporter.finish(str(path))

    def _after_failure(self, e: BaseException) -> None:
        """Puts the board back into its app, collects what it said, writes the report."""
        r = self.result
        device, self.device = self.device, None
        if device is not None and isinstance(e, DeviceLost):
            device.close()
        elif device is not None:
            # After a timeout each command could wait its full time again: leave the *.tmp files
            # (never read; the next run replaces them) and only try the reboot.
            if not self.committed and not isinstance(e, DeviceTimeout):
                for name in self.staged:
                    device.discard(name)
            device.reboot()  # never raises: the board restarts into its app with the files it has
        if self.tap is not None:
            time.sleep(0.3)  # what it printed just now
            r.console = self.tap.problems()
        r.finished_utc = utc_iso()
        r.seconds = time.monotonic() - self.started
        if r.device_id is None:
            return
        try:
            path = report.save(r, self.reports_dir)
        except OSError as why:
            self._warn(f"could not write the report: {why}")
            path = None
        try:
            # The row describes what the board holds: an attempt that changed nothing only goes to the history.
            self.inventory.record_result(r.device_id, False, r.summary(), r.installer, report=path,
                                         history_only=not r.changed_board)
        except InventoryError as why:
            self._warn(str(why))

    def _error(self, e: BaseException) -> BaseException:
        if isinstance(e, KeyboardInterrupt):
            return e
        if not isinstance(e, (_Failed, board.BoardRefused, SettingsError, CentreError, DeviceError, PortError, InventoryError, OSError)):
            return e  # a bug: keep its traceback (the board was put back all the same)
        r = self.result
        failed = r.failed()
        what = f"{failed.name}: {failed.detail}" if failed else _message(e)
        if r.changed_board:
            state = "the board now has the new configuration"
        elif r.device_id is not None or self.device is not None:
            state = "nothing was changed on the board (its previous files are intact)"
        else:
            state = "the board was not touched"
        where = f"; report {r.report_md}" if r.report_md else ""
        return ProvisionError(f"{what} ({state}{where})", r, e.problems if isinstance(e, SettingsError) else None)

    # --- helpers ---
    def _device(self) -> Device:
        assert self.device is not None
        return self.device

    def _warn(self, message: str) -> None:
        self.result.warnings.append(message)
        self.reporter.warn(message)

    def _console_hint(self) -> str:
        if self.tap is None:
            return ""
        time.sleep(0.3)
        lines = self.tap.problems()
        self.result.console = lines
        if not lines:
            return f"; its console showed no error ({len(self.tap.lines())} lines)"
        return "; the board says: " + " | ".join(lines)


def _acl_missing(broker: Broker, device_id: str) -> str | None:
    """Why the broker's ACL file does not cover a device by its user name, or None if it does."""
    path = broker.dir / "acl"
    if not path.exists():
        return f"no ACL file {path}: start the broker once (`firelink broker --dir {broker.dir}`) so it writes one"
    have = {line.strip() for line in path.read_text().splitlines()}
    want = [line for line in acl_text([device_id]).split(f"user {device_id}\n")[1].split("\n\n")[0].splitlines()]
    missing = [line for line in want if line not in have]
    if missing:
        return f"the broker's ACL {path} lacks {'; '.join(missing)}: restart the broker to regenerate it"
    return None


def _str(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _int(v: object) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _dict(v: object) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _message(e: BaseException) -> str:
    if isinstance(e, SettingsError):
        return "; ".join(e.problems)
    text = str(e)
    return text or type(e).__name__


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600)
    path.write_bytes(data)
