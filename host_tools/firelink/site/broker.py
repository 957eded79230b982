"""A site's MQTT broker: mosquitto with a generated configuration.

Per-device passwords and an ACL that confines each device to `firelink/<device_id>/`,
where only the centre's accounts may publish `ack` and `cmd`; a plain listener (loopback
unless asked otherwise) and a mutual-TLS listener signed by the site CA. All state lives in
one directory, so the same broker can be stopped and started again with its devices,
retained messages and sessions.

Identities are bound at the broker (docs/threat-model.md): on every listener the client id
is the account name (`use_username_as_clientid`), and on the TLS listener a client needs two
factors: a certificate of the site CA whose CN is the username it sends (our mosquitto plugin,
mosquitto_plugin/fl_certbind.c, refuses any other) and that account's password (the password
file). One device's credentials can neither take another client's id (and with it its
session) nor log in as another account. The ACL names every account explicitly (no `%u`
patterns).
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from firelink.errors import FireLinkError
from firelink.site import pki

TOPIC_PREFIX = "firelink"
MONITOR_USER = "monitor"
# Other accounts with the centre's rights (a second console, provisioning's own watch, tests).
CENTRE_PREFIX = "centre-"
# Publishes the retained `revoked` marker on a revoked device's status topic; nothing else.
ADMIN_USER = "firelink-admin"
# Names no device may take: the centre's accounts, the admin, the old fixed client ids.
RESERVED_PREFIXES = (CENTRE_PREFIX, "firelink-")
RESERVED_NAMES = (MONITOR_USER,)
# The device id rule of docs/config.md, the one firmware/fl/config.py applies (`_ID`).
DEVICE_ID_RE = re.compile(r"[a-z0-9_-]{1,32}\Z")
# What a revoked device's retained status becomes, for every monitor that subscribes later.
REVOKED_STATE = "revoked"
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's own default for $7$ hashes

# Limits (docs/protocol.md, "Limits"). A device sends nothing larger than its 2048-byte MQTT
# buffer (fl/mqtt.py max_packet); the centre's acks and commands are far smaller.
MESSAGE_SIZE_LIMIT = 4096  # payload bytes; larger PUBLISHes are acknowledged and dropped
MAX_PACKET_SIZE = 8192  # whole packet; a client sending more is disconnected
# The monitor's persistent session holds every device's backlog while it is away: the HIL
# backlog delivers 2,000 events at once, and mosquitto's default of 1000 dropped the rest.
MAX_QUEUED_MESSAGES = 100000
MAX_QUEUED_BYTES = 64 * 1024 * 1024  # ...bounded in memory too: 100000 messages of the size limit would be 400 MB
MAX_INFLIGHT_MESSAGES = 20  # per client, unacknowledged QoS 1 deliveries (mosquitto's default, stated)
MIN_CENTRE_PASSWORD = 16  # characters; the centre's account reads and acknowledges everything


# The certificate-binding plugin (mosquitto_plugin/fl_certbind.c), built by `make plugin`.
PLUGIN_NAME = "fl_certbind.so"
PLUGIN_ENV = "FL_CERTBIND_PLUGIN"  # another build of it (a packaged install)
REPO_ROOT = Path(__file__).resolve().parents[3]


class BrokerError(FireLinkError, RuntimeError):
    pass


def certbind_plugin() -> Path:
    """The built plugin that binds a TLS client's username to its certificate's CN."""
    path = Path(os.environ.get(PLUGIN_ENV) or REPO_ROOT / "build" / PLUGIN_NAME)
    if not path.is_file():
        raise BrokerError(f"the broker's certificate-binding plugin {path} is missing: build it with `make plugin` "
                          f"in {REPO_ROOT} (needs gcc and `sudo apt-get install mosquitto-dev libmosquitto-dev "
                          f"libssl-dev`), or name a built {PLUGIN_NAME} in ${PLUGIN_ENV}")
    return path


class AccountError(BrokerError):
    """An account change refused before anything was written; the message says why and what to do."""


def check_device_id(device_id: str) -> None:
    """Raises AccountError unless `device_id` may name a device account."""
    if not isinstance(device_id, str) or not DEVICE_ID_RE.match(device_id):
        raise AccountError(f"device id {device_id!r} is not valid: 1 to 32 characters from a-z 0-9 - _ "
                           "(docs/config.md, device_id)")
    if device_id in RESERVED_NAMES or device_id.startswith(RESERVED_PREFIXES):
        raise AccountError(f"device id {device_id!r} is reserved for the centre or the broker "
                           f"({', '.join(RESERVED_NAMES)}, {'*, '.join(RESERVED_PREFIXES)}*): choose another id")


def is_centre(username: str) -> bool:
    return username == MONITOR_USER or (username.startswith(CENTRE_PREFIX) and len(username) > len(CENTRE_PREFIX))


def check_centre_name(username: str) -> None:
    if not is_centre(username) or not re.match(r"[a-z0-9_-]{1,64}\Z", username):
        raise AccountError(f"{username!r} is not a centre account name: {MONITOR_USER!r} or "
                           f"{CENTRE_PREFIX}<name> (a-z 0-9 - _)")


def check_password_strength(password: str, who: str = "the centre's password") -> None:
    """The centre's account sees and acknowledges every alarm: no short or repetitive passwords."""
    if len(password) < MIN_CENTRE_PASSWORD or len(set(password)) < 8:
        raise AccountError(f"{who} is too weak: at least {MIN_CENTRE_PASSWORD} characters with at least 8 "
                           "different ones (leave it out to have one generated)")


@dataclass(frozen=True)
class Account:
    username: str
    password: str


def password_hash(password: str, salt: bytes | None = None) -> str:
    """A mosquitto 2.x password-file hash ($7$: PBKDF2-HMAC-SHA512)."""
    salt = salt or secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    return "$7$%d$%s$%s" % (PBKDF2_ITERATIONS, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def acl_text(usernames: list[str] | tuple[str, ...] = ()) -> str:
    """Rules for each account by name. Not `pattern ... %u`: a pattern also grants a certificate
    whose account was revoked (its CN is still a username on the TLS listener)."""
    parts = ["# Generated by `firelink broker`; edits are overwritten."]
    for u in sorted(set(usernames) | {MONITOR_USER}):
        if is_centre(u):
            parts.append(f"user {u}\ntopic read {TOPIC_PREFIX}/#\ntopic write {TOPIC_PREFIX}/+/ack\n"
                         f"topic write {TOPIC_PREFIX}/+/cmd")
        elif u == ADMIN_USER:
            parts.append(f"user {u}\ntopic readwrite {TOPIC_PREFIX}/+/status")
        elif DEVICE_ID_RE.match(u):  # anything else in the file gets no rights at all
            t = f"{TOPIC_PREFIX}/{u}"
            parts.append(f"user {u}\ntopic write {t}/status\ntopic write {t}/event\ntopic write {t}/heartbeat\n"
                         f"topic write {t}/cmd/result\ntopic read {t}/ack\ntopic read {t}/cmd")
    return "\n\n".join(parts) + "\n"


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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Broker:
    """One site's broker state directory and, when started, its mosquitto process."""

    def __init__(self, state_dir: Path, port: int = 1883, tls_port: int = 8883, bind: str = "127.0.0.1",
                 hostnames: list[str] | None = None, plain_bind: str = "127.0.0.1") -> None:
        self.dir = Path(state_dir)
        self.port = port
        self.tls_port = tls_port
        self.bind = bind  # the TLS listener
        # Passwords travel in clear on the plain listener: loopback unless asked for explicitly.
        self.plain_bind = plain_bind
        self.hostnames = hostnames or ["localhost", "127.0.0.1"]
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_reload = ReloadOutcome()  # of the latest account change
        self.last_revoke_marker = ""  # what the latest revoke did to the device's retained status
        self.last_withdrawn = ""  # what the latest revoke or rotation did to the old certificate
        self.last_kick = ""  # what the latest revoke did to the device's live connection

    # --- files ---
    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    @property
    def accounts_file(self) -> Path:
        return self.dir / "accounts.json"

    @property
    def conf_file(self) -> Path:
        return self.dir / "mosquitto.conf"

    @property
    def log_file(self) -> Path:
        return self.dir / "mosquitto.log"

    @property
    def data_dir(self) -> Path:
        """mosquitto's own writable directory (its persistence database), the only one it may write."""
        return self.dir / "data"

    def ca(self) -> pki.Credential:
        """The site CA with its key (made on first use). The key may be protected with a passphrase
        ($FL_CA_PASSPHRASE) or kept offline; signing then needs it back (docs/threat-model.md)."""
        try:
            if not (self.pki_dir / "ca.crt").exists():
                ca = pki.make_ca()
                pki.save(ca, self.pki_dir, "ca", passphrase=pki.ca_passphrase())
                return ca
            return pki.load_ca(self.pki_dir)
        except pki.PKIError as e:
            raise BrokerError(str(e)) from None

    def _server_cert(self) -> pki.Credential:
        server = pki.load(self.pki_dir, "server")
        if server is None:
            server = pki.make_server(self.ca(), self.hostnames)
            pki.save(server, self.pki_dir, "server")
        return server

    def _accounts(self) -> dict[str, str]:
        """username -> password hash."""
        if not self.accounts_file.exists():
            return {}
        try:
            data = json.loads(self.accounts_file.read_text())
        except (OSError, ValueError) as e:
            raise BrokerError(f"{self.accounts_file} is unreadable ({e}): restore it from a backup") from None
        if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
            raise BrokerError(f"{self.accounts_file} is not a map of account names to password hashes")
        return dict(data)

    def _save_accounts(self, accounts: dict[str, str]) -> None:
        """The files mosquitto reads, then accounts.json, each replaced whole (temp + rename); then
        the running broker reloads. accounts.json changes only once everything else is written."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self._write_broker_files(accounts)
        _write_private(self.accounts_file, json.dumps(accounts, indent=1, sort_keys=True).encode())  # last
        self.last_reload = self.reload()

    def _write_broker_files(self, accounts: dict[str, str]) -> None:
        _write_private(self.dir / "passwd", "".join(f"{u}:{h}\n" for u, h in sorted(accounts.items())).encode())
        _write_private(self.dir / "acl", acl_text(list(accounts)).encode())
        for name in ("passwd", "acl"):
            self._hand_to_broker(self.dir / name)

    def reload(self) -> ReloadOutcome:
        """SIGHUP to every mosquitto serving this directory, whoever started it (this process,
        `firelink broker` in another terminal, a service): it re-reads the password file and
        ACL and drops connected clients no longer allowed. Found by its exact `-c <conf>`
        (Linux /proc), so another site's broker on the same machine is left alone."""
        out = ReloadOutcome()
        pids = broker_pids(self.conf_file)
        if self.proc is not None and self.proc.poll() is None and self.proc.pid not in pids:
            pids.append(self.proc.pid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGHUP)
                out.signalled.append(pid)
            except ProcessLookupError:
                continue
            except PermissionError:
                out.problems.append(f"not allowed to signal mosquitto (pid {pid}): run `kill -HUP {pid}` as "
                                    "its owner, or restart the broker")
        return out

    @contextlib.contextmanager
    def _accounts_locked(self) -> Iterator[dict[str, str]]:
        """The accounts for a read-modify-write, saved on a normal exit only (an exception leaves
        every file as it was); two tools provisioning at once (each its own process) must not
        lose each other's accounts."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "accounts.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            accounts = self._accounts()
            before = dict(accounts)
            yield accounts
            try:
                self._save_accounts(accounts)
            except BaseException:
                # A disk error half way: put back what mosquitto reads, as accounts.json still is.
                with contextlib.suppress(OSError):
                    self._write_broker_files(before)
                raise

    def add_account(self, username: str, password: str | None = None, rotate: bool = False) -> Account:
        """A device (`check_device_id`) or centre (`is_centre`) account. An existing one is replaced
        only with rotate=True: its old password stops working at the broker's reload."""
        if is_centre(username):
            check_centre_name(username)
            if password is not None:
                check_password_strength(password)
        elif username != ADMIN_USER:
            check_device_id(username)
        if password is not None and (not password or "\n" in password):
            raise AccountError("a password must be non-empty and on one line")
        password = password or secrets.token_urlsafe(24)
        with self._accounts_locked() as accounts:
            if username in accounts and not rotate:
                raise AccountError(f"{username!r} already has an account: replacing its credential locks out "
                                   "whatever uses it now; add --rotate to do that")
            accounts[username] = password_hash(password)
        return Account(username, password)

    def add_device(self, device_id: str, password: str | None = None, rotate: bool = False,
                   keep_key: bool = True) -> tuple[Account, pki.Credential]:
        """Creates a device's password and client certificate (rotate=True replaces both). The key
        stays in pki/devices/ (0600) for the installer to copy unless keep_key is False:
        provisioning writes it to the board and keeps none."""
        check_device_id(device_id)
        if not rotate and device_id in self._accounts():
            raise AccountError(f"{device_id!r} already has an account: --rotate issues a new password and "
                               "certificate, and the ones it holds now stop working")
        cred = pki.make_client(self.ca(), device_id)
        self.save_device_cert(device_id, cred, keep_key)
        account = self.add_account(device_id, password, rotate=rotate)
        return account, cred

    @property
    def crl_file(self) -> Path:
        return self.pki_dir / "crl.pem"

    def _revoked(self) -> dict[str, str]:
        """serial (decimal text) -> device id, of every certificate withdrawn."""
        path = self.pki_dir / "revoked.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            raise BrokerError(f"{path} is unreadable ({e}): restore it from a backup") from None
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def withdraw_cert(self, device_id: str, cert_der: bytes) -> str:
        """Adds the certificate to the site's CRL, which the TLS listener checks at every handshake
        (re-read on reload). Needs the CA key; without it the certificate still completes TLS
        but logs in only with its account's current password. Returns what was done, in words."""
        serial = pki.serial_of(cert_der)
        revoked = self._revoked()
        revoked[str(serial)] = device_id
        try:
            crl = pki.make_crl(self.ca(), [int(k) for k in revoked])
        except BrokerError as e:
            return (f"certificate {serial:x} NOT added to the CRL ({e}); it still completes TLS, but logs in only "
                    "with its account's current password: run the revoke again with the CA key at hand")
        _write_private(self.pki_dir / "revoked.json", json.dumps(revoked, indent=1, sort_keys=True).encode())
        _write_public(self.crl_file, crl)
        return f"certificate {serial:x} on the CRL"

    def _ensure_crl(self) -> None:
        if not self.crl_file.exists():
            _write_public(self.crl_file, pki.make_crl(self.ca(), [int(k) for k in self._revoked()]))

    def save_device_cert(self, device_id: str, cred: pki.Credential, keep_key: bool = False) -> None:
        """The device's certificate (and key if keep_key); a certificate it replaces is withdrawn
        (CRL): a board provisioned again must not leave a working credential on the old one."""
        if pki.common_name(cred.cert_der) != device_id:
            raise AccountError(f"the certificate names {pki.common_name(cred.cert_der)!r}, not {device_id!r}")
        old = self.pki_dir / "devices" / f"{device_id}.crt.der"
        if old.exists() and old.read_bytes() != cred.cert_der:
            self.last_withdrawn = self.withdraw_cert(device_id, old.read_bytes())
        devices = self.pki_dir / "devices"
        pki.save(cred, devices, device_id, with_key=keep_key)
        if not keep_key:
            for suffix in (".key", ".key.der"):
                (devices / (device_id + suffix)).unlink(missing_ok=True)

    def add_monitor(self, password: str | None = None, rotate: bool = False) -> Account:
        return self.add_account(MONITOR_USER, password, rotate=rotate)

    def add_centre(self, name: str, password: str | None = None, rotate: bool = False) -> Account:
        """Another account with the centre's rights (`centre-<name>`): its own client id, so it never
        displaces the monitor."""
        return self.add_account(name, password, rotate=rotate)

    def centre_cert(self, name: str) -> tuple[Path, Path]:
        """A client certificate for a centre account (CN = its name: on the TLS listener it goes
        with that username and the account's password, nothing else), written to
        pki/centres/<name>.crt and .key (0600); returns their paths. The account must exist: its
        rights come from the ACL."""
        check_centre_name(name)
        if name not in self._accounts():
            raise AccountError(f"no centre account {name!r}: add it first (--monitor-password / --add-centre)")
        cred = pki.make_client(self.ca(), name)
        pki.save(cred, self.pki_dir / "centres", name)
        return self.pki_dir / "centres" / f"{name}.crt", self.pki_dir / "centres" / f"{name}.key"

    def remove_account(self, username: str) -> bool:
        with self._accounts_locked() as accounts:
            return accounts.pop(username, None) is not None

    def check_password(self, username: str, password: str) -> bool:
        """Whether `password` is the account's (checked against the stored hash, no login)."""
        h = self._accounts().get(username)
        if h is None:
            return False
        try:
            _, kind, iterations, salt, digest = h.split("$")
            if kind != "7":
                return False
            got = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
        except ValueError:
            return False
        return secrets.compare_digest(base64.b64encode(got).decode(), digest)

    def revoke(self, username: str) -> bool:
        """Removes a device's account so that it can no longer connect (nor publish, with the
        certificate it keeps), and its certificate files; returns whether the account existed.
        Then marks its retained status `revoked` (`mark_revoked`) when the broker runs."""
        if is_centre(username) or username == ADMIN_USER or username in RESERVED_NAMES:
            raise AccountError(f"{username!r} is not a device: --revoke removes device accounts only")
        cert = self.pki_dir / "devices" / f"{username}.crt.der"
        self.last_withdrawn = self.withdraw_cert(username, cert.read_bytes()) if cert.exists() else \
            "no certificate of it here to withdraw"
        with self._accounts_locked() as accounts:  # the reload also re-reads the CRL
            existed = accounts.pop(username, None) is not None
        for suffix in (".crt", ".key", ".crt.der", ".key.der"):
            (self.pki_dir / "devices" / (username + suffix)).unlink(missing_ok=True)
        if not DEVICE_ID_RE.match(username):
            self.last_revoke_marker = "not a valid device id: no status topic to mark"
        elif self.last_reload.signalled:
            # The reload re-checks every connected client's login, a TLS one's password too.
            self.last_kick = "its live connection (if any) dropped by the reload"
            self.last_revoke_marker = self.mark_revoked(username)
        else:
            self.last_revoke_marker = "no running broker: its retained status is marked at the next revoke while it runs"
        return existed

    def _admin_account(self) -> Account:
        """The broker tools' own account (status topics only); its password lives in the state dir."""
        path = self.dir / "admin.json"
        try:
            doc = json.loads(path.read_text())
            if doc.get("username") == ADMIN_USER and self.check_password(ADMIN_USER, doc["password"]):
                return Account(ADMIN_USER, doc["password"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
        account = self.add_account(ADMIN_USER, rotate=True)
        _write_private(path, json.dumps({"username": ADMIN_USER, "password": account.password}).encode())
        return account

    def mark_revoked(self, device_id: str, timeout_s: float = 10.0) -> str:
        """Replaces the device's retained status with `{"state": "revoked"}`, so a monitor shows it
        revoked (not lost, not online) now and after any restart. Retried until the broker holds
        the marker: the device's will (`offline`) may still arrive while the reload drops it."""
        import paho.mqtt.client as mqtt

        check_device_id(device_id)
        admin = self._admin_account()
        topic = f"{TOPIC_PREFIX}/{device_id}/status"
        marker = json.dumps({"state": REVOKED_STATE, "ts": int(time.time())}).encode()
        deadline = time.monotonic() + timeout_s
        seen: list[bytes] = []
        last = "not connected"
        while time.monotonic() < deadline:
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=ADMIN_USER, protocol=mqtt.MQTTv311)
            c.username_pw_set(admin.username, admin.password)
            c.on_message = lambda client, userdata, msg: seen.append(msg.payload)
            try:
                c.connect(*self.plain_listener(), keepalive=10)
                c.loop_start()
                info = c.publish(topic, marker, qos=1, retain=True)
                info.wait_for_publish(max(0.5, deadline - time.monotonic()))
                # Read back what the broker holds after the device is surely gone.
                seen.clear()
                c.subscribe(topic, qos=1)
                settle = time.monotonic() + 1.0
                while time.monotonic() < settle and not seen:
                    time.sleep(0.05)
                if seen and _is_revoked(seen[-1]):
                    return f"retained status of {device_id} set to {{\"state\": \"revoked\"}}"
                last = f"the broker holds {seen[-1][:60]!r}" if seen else "no retained status read back"
            except (OSError, ValueError, RuntimeError) as e:
                last = str(e) or type(e).__name__
                time.sleep(0.2)
            finally:
                c.loop_stop()
                c.disconnect()
        return f"could not mark {device_id} revoked on the broker ({last}); monitors may show it lost"

    def tls_listener(self) -> tuple[str, int]:
        try:
            found = [line.split() for line in self.conf_file.read_text().splitlines() if line.startswith("listener ")]
            if len(found) >= 2 and len(found[1]) == 3:
                host = found[1][2]
                return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), int(found[1][1])
        except (OSError, ValueError):
            pass
        return self.bind, self.tls_port

    def plain_listener(self) -> tuple[str, int]:
        """Where the running broker's plain listener is, from its configuration (a tool that only
        knows the directory), else from our own settings."""
        try:
            for line in self.conf_file.read_text().splitlines():
                f = line.split()
                if len(f) == 3 and f[0] == "listener":
                    host = f[2]
                    return ("127.0.0.1" if host in ("0.0.0.0", "::") else host), int(f[1])
        except (OSError, ValueError):
            pass
        return self.plain_bind, self.port

    def usernames(self) -> list[str]:
        return sorted(self._accounts())

    def broker_user(self) -> str | None:
        """Who mosquitto runs as when started as root (None: as ourselves)."""
        if os.geteuid() != 0:
            return None
        for name in ("mosquitto", "nobody"):
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                continue
        raise BrokerError("neither user `mosquitto` nor `nobody` exists to run mosquitto without root")

    def _hand_to_broker(self, path: Path) -> None:
        """Makes a file mosquitto reads (or writes) its own while staying 0600/0700: it runs as
        a user of its own when started as root, and re-reads these files on reload as that user."""
        user = self.broker_user()
        if user is not None and path.exists():
            pw = pwd.getpwnam(user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _check_reachable(self, user: str) -> None:
        """mosquitto re-reads its password file and ACL as `user` on every reload: every directory
        above the state directory must let it through."""
        pw = pwd.getpwnam(user)
        for d in [self.dir.resolve(), *self.dir.resolve().parents]:
            st = d.stat()
            ok = (st.st_mode & 0o001) or (st.st_uid == pw.pw_uid and st.st_mode & 0o100) or \
                (st.st_gid == pw.pw_gid and st.st_mode & 0o010)
            if not ok:
                raise BrokerError(f"mosquitto runs as user {user!r}, not root, and cannot pass through {d} "
                                  f"(mode {st.st_mode & 0o777:o}): keep the broker directory where it can "
                                  f"(e.g. /var/lib/firelink/broker) or `chmod o+x {d}`")

    def write_config(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._server_cert()
        self._ensure_crl()
        user = self.broker_user()
        if user is not None:
            os.chmod(self.dir, 0o711)  # passable, not listable: the files inside stay 0600
            self._check_reachable(user)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        old_db, new_db = self.dir / "mosquitto.db", self.data_dir / "mosquitto.db"
        if old_db.exists() and not new_db.exists():  # a state directory from before the data/ split
            os.replace(old_db, new_db)
        self._write_broker_files(self._accounts())
        if not self.log_file.exists():
            _write_private(self.log_file, b"")
        for path in (self.data_dir, new_db, self.log_file, self.pki_dir / "server.key"):
            self._hand_to_broker(path)
        # Copied next to the files mosquitto reads: it loads plugins after dropping root, as its own user.
        plugin = self.dir / PLUGIN_NAME
        _write_public(plugin, certbind_plugin().read_bytes())
        pk = self.pki_dir
        listener_identity = [
            # The client id is the account: nobody takes another's id, and with it its session.
            "use_username_as_clientid true",
        ]
        lines = [
            "# Generated by `firelink broker`; edits are overwritten.",
            "per_listener_settings false",
            "allow_anonymous false",
            f"password_file {self.dir / 'passwd'}",
            f"acl_file {self.dir / 'acl'}",
            # Asked before the password file: refuses a TLS username other than the certificate's
            # CN, defers everything else (the plain listener has no certificate) to the password file.
            f"plugin {plugin}",
            "persistence true",
            f"persistence_location {self.data_dir}/",
            "autosave_interval 1",
            f"log_dest file {self.log_file}",
            "log_type error", "log_type warning", "log_type notice", "log_type information",
            "connection_messages true",
            "log_timestamp true",
            "max_keepalive 1200",
            f"message_size_limit {MESSAGE_SIZE_LIMIT}",
            f"max_packet_size {MAX_PACKET_SIZE}",
            f"max_queued_messages {MAX_QUEUED_MESSAGES}",
            f"max_queued_bytes {MAX_QUEUED_BYTES}",
            f"max_inflight_messages {MAX_INFLIGHT_MESSAGES}",
            f"listener {self.port} {self.plain_bind}",
            *listener_identity,
            f"listener {self.tls_port} {self.bind}",
            *listener_identity,
            f"cafile {pk / 'ca.crt'}",
            f"certfile {pk / 'server.crt'}",
            f"keyfile {pk / 'server.key'}",
            "require_certificate true",
            # Revoked and replaced device certificates, refused at the handshake.
            f"crlfile {self.crl_file}",
            # Two factors: the username must be the certificate's CN (a device's is its id,
            # pki.make_client; the plugin refuses another) and its password must match.
            "use_identity_as_username false",
            "tls_version tlsv1.2",
        ]
        if user is not None:
            lines.insert(1, f"user {user}")
        _write_private(self.conf_file, ("\n".join(lines) + "\n").encode())
        self._hand_to_broker(self.conf_file)  # re-read on every reload, as that user
        return self.conf_file

    # --- process ---
    def start(self, timeout_s: float = 10.0) -> None:
        exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if exe is None:
            raise BrokerError("mosquitto is not installed: `sudo apt-get install mosquitto` (or run `make test`, "
                              "which installs it when run as root)")
        for host, port in ((self.plain_bind, self.port), (self.bind, self.tls_port)):
            problem = port_taken(host, port)
            if problem:
                raise BrokerError(problem)
        self.write_config()
        log_start = self.log_file.stat().st_size if self.log_file.exists() else 0
        # Its own session: a Ctrl-C at our terminal must not kill the broker before the
        # devices and the monitor have said goodbye through it; stop() ends it.
        self.proc = subprocess.Popen([exe, "-c", str(self.conf_file)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        want = {self.port, self.tls_port}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise BrokerError(f"mosquitto exited at start (status {self.proc.returncode}): "
                                  f"{err.strip() or self._log_tail(log_start)}")
            # Its own sockets listening, not merely something answering on the ports.
            if want <= listening_ports(self.proc.pid):
                return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not open ports {self.port}/{self.tls_port} within {timeout_s} s: "
                          f"{self._log_tail(log_start)}")

    def _log_tail(self, start: int) -> str:
        if not self.log_file.exists():
            return "(no log)"
        with self.log_file.open("rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")[-2000:]

    def stop(self, timeout_s: float = 5.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _is_revoked(payload: bytes) -> bool:
    try:
        doc = json.loads(payload)
    except ValueError:
        return False
    return isinstance(doc, dict) and doc.get("state") == REVOKED_STATE


def port_taken(host: str, port: int) -> str | None:
    """Why mosquitto could not listen on host:port (None: it can). Bound the way mosquitto binds
    (SO_REUSEADDR), so a port in TIME_WAIT is not reported as taken."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        if e.errno == 98:  # EADDRINUSE
            return f"port {port} on {host} is taken by another program: stop it or choose another port"
        return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


def listening_ports(pid: int, proc: Path = Path("/proc")) -> set[int]:
    """TCP ports on which process `pid` itself has a listening socket (Linux /proc)."""
    inodes = set()
    try:
        for fd in (proc / str(pid) / "fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = (proc / str(pid) / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
