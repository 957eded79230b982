"""What the centre sees of one device, watched over the broker with the monitor's account.

Provisioning uses it to prove, from the centre's side, that a board is commissioned: the
broker accepts the monitor's account (before the board is touched), the board's live `online`
status after its reboot, its first heartbeat, and a test event together with the centre's
`ack` for it. It also sends the test command (`cmd` is writable by the monitor account only).

Every wait has a deadline. Messages are kept with the monotonic time they arrived, so a wait
can ask for "after the reboot" and a round trip can be measured on one clock. A retained
message (what the broker held from before) is marked as such: only a live `online` proves the
board just connected.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt

from firelink.errors import FireLinkError
from firelink.provision.settings import BrokerURL

TOPIC_PREFIX = "firelink"
KINDS = {"status": "status", "heartbeat": "heartbeat", "event": "event", "ack": "ack", "cmd/result": "cmd_result"}
KEEPALIVE_S = 30


class CentreError(FireLinkError):
    """The centre's view of the broker failed; the message says what to do."""


class BrokerUnreachable(CentreError):
    pass


class BrokerRefused(CentreError):
    pass


class BrokerTLSFailed(CentreError):
    pass


@dataclass(frozen=True)
class TLSFiles:
    ca: Path  # PEM
    cert: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class Seen:
    device: str
    kind: str  # status, heartbeat, event, ack, cmd_result
    doc: dict[str, Any]  # {} when the payload was not a JSON object
    retained: bool
    at: float  # time.monotonic() when it arrived
    wall: float  # time.time() when it arrived


class CentreWatch:
    def __init__(self, url: BrokerURL, username: str, password: str | None, tls: TLSFiles | None = None,
                 client_id: str | None = None, refused_hint: str = "") -> None:
        self.url = url
        self.refused_hint = refused_hint  # appended to the message when the broker refuses the account
        self.username = username
        self.tls = tls
        self._cond = threading.Condition()
        self._seen: list[Seen] = []
        self._topics: list[str] = []
        self._connack: Any = None
        self._suback: dict[int, list[Any]] = {}
        self.link_lost: str | None = None
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311, clean_session=True,
                                   client_id=client_id or f"firelink-provision-{os.getpid()}-{secrets.token_hex(3)}")
        self._client.username_pw_set(username, password)
        if url.tls:
            if tls is None:
                raise ValueError("an mqtts:// broker needs the site CA (and a client certificate)")
            self._client.tls_set(ca_certs=str(tls.ca), certfile=str(tls.cert) if tls.cert else None,
                                 keyfile=str(tls.key) if tls.key else None, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self._client.reconnect_delay_set(1, 5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._started = False

    # --- connection ---
    def connect(self, timeout_s: float) -> None:
        """Connects as the monitor; BrokerUnreachable, BrokerTLSFailed or BrokerRefused within timeout_s."""
        where = f"{self.url.host}:{self.url.port}"
        deadline = time.monotonic() + timeout_s
        self._client.connect_timeout = max(0.5, timeout_s)
        try:
            self._client.connect(self.url.host, self.url.port, keepalive=KEEPALIVE_S)
        except ssl.SSLCertVerificationError as e:
            raise BrokerTLSFailed(f"the broker at {where} failed TLS verification: {e.verify_message}: is "
                                  f"--broker-dir the site whose CA signed that broker's certificate, and is "
                                  f"{self.url.host!r} one of the certificate's names?") from None
        except ssl.SSLError as e:
            raise BrokerTLSFailed(f"TLS with the broker at {where} failed ({e.reason or e}): is that port the "
                                  "broker's mutual-TLS listener?") from None
        except (socket.timeout, TimeoutError):
            raise BrokerUnreachable(f"the broker at {where} did not answer within {timeout_s:g} s: check the "
                                    "address, the network and the firewall") from None
        except OSError as e:
            raise BrokerUnreachable(f"cannot reach the broker at {where}: {e.strerror or e}: is it running, "
                                    "and is the address right?") from None
        self._client.loop_start()
        self._started = True
        with self._cond:  # (never close() while holding it: paho's thread reports the disconnect under it)
            rc = self._connack if self._cond.wait_for(lambda: self._connack is not None,
                                                      max(0.0, deadline - time.monotonic())) else None
        if rc is None:
            self.close()
            raise BrokerUnreachable(f"no MQTT answer from {where} within {timeout_s:g} s: is the address right, "
                                    f"and is it an MQTT broker{' with TLS' if self.url.tls else ''}?")
        if rc.is_failure:
            self.close()
            raise BrokerRefused(f"the broker at {where} refused the {self.username!r} account: {rc}{self.refused_hint}")

    def watch(self, device_id: str, timeout_s: float) -> None:
        """Subscribes to the device's topics; CentreError if the broker's ACL refuses any."""
        topics = [f"{TOPIC_PREFIX}/{device_id}/{k}" for k in KINDS]
        self._topics = topics
        rc, mid = self._client.subscribe([(t, 1) for t in topics])
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerUnreachable(f"lost the broker while subscribing ({mqtt.error_string(rc)})")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._suback, timeout_s):
                raise BrokerUnreachable(f"the broker did not confirm the subscription within {timeout_s:g} s")
            codes = self._suback.pop(mid)
        refused = [t for t, c in zip(topics, codes) if c.is_failure]
        if refused:
            raise BrokerRefused(f"the broker's ACL does not let {self.username!r} read {', '.join(refused)}")

    def close(self) -> None:
        if self._started:
            self._client.disconnect()
            self._client.loop_stop()
            self._started = False

    def __enter__(self) -> CentreWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- paho's thread ---
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self._cond:
            self._connack = rc
            if not rc.is_failure:
                self.link_lost = None
            self._cond.notify_all()
        if not rc.is_failure and self._topics:  # after a reconnect: subscribe again
            client.subscribe([(t, 1) for t in self._topics])

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        with self._cond:
            self.link_lost = str(rc)
            self._cond.notify_all()

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
        with self._cond:
            self._suback[mid] = list(codes)
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        parts = msg.topic.split("/", 2)
        if len(parts) != 3 or parts[2] not in KINDS:
            return
        try:
            doc = json.loads(msg.payload.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            doc = {}
        seen = Seen(parts[1], KINDS[parts[2]], doc if isinstance(doc, dict) else {}, bool(msg.retain),
                    time.monotonic(), time.time())
        with self._cond:
            self._seen.append(seen)
            self._cond.notify_all()

    # --- what was seen ---
    def wait_for(self, match: Callable[[Seen], bool], timeout_s: float, since: float = 0.0) -> Seen | None:
        """The first message that arrived at or after `since` (monotonic) and matches; None on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            checked = 0
            while True:
                for s in self._seen[checked:]:
                    if s.at >= since and match(s):
                        return s
                checked = len(self._seen)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def seen(self, kind: str | None = None) -> list[Seen]:
        with self._cond:
            return [s for s in self._seen if kind is None or s.kind == kind]

    def publish_cmd(self, device_id: str, doc: dict[str, Any], timeout_s: float) -> float:
        """Publishes a command (QoS 1) and waits for the broker's PUBACK; returns when it was sent."""
        sent_at = time.monotonic()
        info = self._client.publish(f"{TOPIC_PREFIX}/{device_id}/cmd", json.dumps(doc), qos=1)
        try:
            info.wait_for_publish(timeout_s)
        except (RuntimeError, ValueError) as e:
            raise BrokerUnreachable(f"could not send the test command: {e}") from None
        if not info.is_published():
            raise BrokerUnreachable(f"the broker did not accept the test command within {timeout_s:g} s"
                                    + (f" (link lost: {self.link_lost})" if self.link_lost else ""))
        return sent_at
