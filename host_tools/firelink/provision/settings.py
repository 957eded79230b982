"""What the installer types for `firelink provision`, checked before the board is touched.

Every value is checked on the host and every problem is reported, each naming its option and
what is wrong with it (`--wifi-ssid: 33 bytes, at most 32`), so one run shows them all. The
rules follow docs/config.md (what the firmware accepts) where the two meet, and are stricter
where the installer can only have made a typo (an APN with an empty label, a URL with a path).
The firmware's own validator (`fl/config.validate`) checks the finished config.json again on
the board before it is put in place.
"""
from __future__ import annotations

import ipaddress
import re
import string
from dataclasses import dataclass
from typing import Any

from firelink.errors import UsageError

SSID_MAX_BYTES = 32
WPA_MIN, WPA_MAX = 8, 63
APN_MAX = 62
SITE_MAX = 64
HOST_MAX = 253
HOST_CHARS = set(string.ascii_letters + string.digits + ".-_")
# cellular.md: the Vietnamese carriers' APNs. Another APN is allowed (private APNs exist), with a warning.
KNOWN_APNS = {"v-internet": "Viettel", "m3-world": "VinaPhone", "m-wap": "MobiFone", "internet": "Vietnamobile"}
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
_APN_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")


class SettingsError(UsageError, ValueError):
    """One or more values are unusable; `problems` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class BrokerURL:
    scheme: str  # mqtt | mqtts
    host: str
    port: int

    @property
    def tls(self) -> bool:
        return self.scheme == "mqtts"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True)
class Settings:
    """Checked values, ready to be written to the board."""

    site: str
    wifi_ssid: str | None  # None: a site without Wi-Fi (4G alone)
    wifi_password: str  # "" for an open network
    broker: BrokerURL
    apn: str | None
    inputs: list[dict[str, Any]] | None  # None: the board's default inputs
    warnings: tuple[str, ...] = ()
    cellular: bool = False  # 4G on (with --apn, or --4g: the APN from the SIM's operator)


def check(site: str, wifi_ssid: str | None, wifi_password: str, broker_url: str, apn: str | None = None,
          inputs: object = None, cellular: bool = False) -> Settings:
    """The checked settings, or SettingsError listing every problem. wifi_ssid None: the site has
    no Wi-Fi, and 4G (cellular, or an APN) must carry everything."""
    problems: list[str] = []
    warnings: list[str] = []
    cellular = cellular or apn is not None
    _check_site(site, problems)
    if wifi_ssid is not None:
        _check_ssid(wifi_ssid, problems)
        _check_wifi_password(wifi_password, problems, warnings)
    elif not cellular:
        problems.append("--no-wifi: a site without Wi-Fi needs 4G: give --apn APN (or --4g for the APN the SIM's "
                        "operator implies)")
    url = _parse_broker(broker_url, problems, warnings)
    if apn is not None:
        _check_apn(apn, problems, warnings)
    checked_inputs = _check_inputs(inputs, problems)
    if problems:
        raise SettingsError(problems)
    assert url is not None
    return Settings(site=site, wifi_ssid=wifi_ssid, wifi_password=wifi_password if wifi_ssid is not None else "",
                    broker=url, apn=apn, inputs=checked_inputs, warnings=tuple(warnings), cellular=cellular)


def _control_chars(text: str) -> list[str]:
    return sorted({f"U+{ord(c):04X}" for c in text if ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0
                   or c in "\u2028\u2029"})


def _check_site(site: str, problems: list[str]) -> None:
    if not site.strip():
        problems.append("--site: empty; give the site's name as the centre should show it")
    elif len(site) > SITE_MAX:
        problems.append(f"--site: {len(site)} characters, at most {SITE_MAX}")
    bad = _control_chars(site)
    if bad:
        problems.append(f"--site: control characters ({', '.join(bad)}) are not allowed")


def _check_ssid(ssid: str, problems: list[str]) -> None:
    try:
        n = len(ssid.encode("utf-8"))
    except UnicodeEncodeError:
        problems.append("--wifi-ssid: not valid UTF-8 text")
        return
    if n == 0:
        problems.append("--wifi-ssid: empty; give the site network's name")
    elif n > SSID_MAX_BYTES:
        problems.append(f"--wifi-ssid: {n} bytes, at most {SSID_MAX_BYTES}"
                        + (" (UTF-8: accented letters take 2-3 bytes each)" if n != len(ssid) else ""))
    bad = _control_chars(ssid)
    if bad:
        problems.append(f"--wifi-ssid: control characters ({', '.join(bad)}) are not allowed")


def _check_wifi_password(pw: str, problems: list[str], warnings: list[str]) -> None:
    if pw == "":
        warnings.append("no Wi-Fi password: the board joins an open network (anyone nearby can join it too); "
                        "the MQTT link is still protected by TLS only with an mqtts:// broker")
        return
    if len(pw) == 64 and all(c in string.hexdigits for c in pw):
        return  # the 256-bit pre-shared key itself, as WPA2 allows
    bad = sorted({c for c in pw if not (0x20 <= ord(c) <= 0x7E)})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad)
        problems.append(f"--wifi-password: WPA2 passphrases are printable ASCII only; found {shown}")
    if not WPA_MIN <= len(pw) <= WPA_MAX:
        problems.append(f"--wifi-password: {len(pw)} characters, WPA2 needs {WPA_MIN}..{WPA_MAX} "
                        "(or 64 hex digits; empty for an open network)")


def _parse_broker(text: str, problems: list[str], warnings: list[str]) -> BrokerURL | None:
    opt = "--broker"
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in DEFAULT_PORTS:
        problems.append(f"{opt}: {text!r} is not mqtt://HOST:PORT or mqtts://HOST:PORT")
        return None
    if any(c in rest for c in "/?#"):
        problems.append(f"{opt}: {text!r} has a path, query or fragment; give only the scheme, host and port")
        return None
    if "@" in rest:
        problems.append(f"{opt}: credentials do not go in the URL (they would show in the process list); "
                        "the board gets its own generated password")
        return None
    if rest.startswith("["):
        host, close, after = rest[1:].partition("]")
        if not close:
            problems.append(f"{opt}: {text!r}: unclosed '[' around an IPv6 address")
            return None
        port_text = after[1:] if after.startswith(":") else None
        if after and port_text is None:
            problems.append(f"{opt}: {text!r}: expected ':PORT' after the IPv6 address")
            return None
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            problems.append(f"{opt}: {host!r} is not an IPv6 address")
            return None
    else:
        host, colon, port_text_or_empty = rest.rpartition(":")
        if not colon:
            host, port_text = rest, None
        else:
            port_text = port_text_or_empty
    ok = True
    if not host:
        problems.append(f"{opt}: {text!r} has no host")
        ok = False
    elif ":" not in host:
        if len(host) > HOST_MAX:
            problems.append(f"{opt}: host is {len(host)} characters, at most {HOST_MAX}")
            ok = False
        bad = sorted(set(host) - HOST_CHARS)
        if bad:
            problems.append(f"{opt}: host {host!r} has characters a host name cannot have: {''.join(bad)!r}")
            ok = False
    port = DEFAULT_PORTS[scheme]
    if port_text is not None:
        if not port_text.isdigit():
            problems.append(f"{opt}: port {port_text!r} is not a number")
            ok = False
        elif not 1 <= int(port_text) <= 65535:
            problems.append(f"{opt}: port {int(port_text)} is out of range 1..65535")
            ok = False
        else:
            port = int(port_text)
    if not ok:
        return None
    if scheme == "mqtt":
        warnings.append("mqtt:// is not encrypted: passwords and alarms cross the network in clear; "
                        "use mqtts:// (TLS with the board's own certificate) outside a test bench")
    return BrokerURL(scheme, host, port)


def _check_apn(apn: str, problems: list[str], warnings: list[str]) -> None:
    opt = "--apn"
    if not apn:
        problems.append(f"{opt}: empty; leave the option out when the board has no SIM")
        return
    if len(apn) > APN_MAX:
        problems.append(f"{opt}: {len(apn)} characters, at most {APN_MAX}")
    bad = sorted({c for c in apn if not (c.isascii() and (c.isalnum() or c in ".-"))})
    if bad:
        problems.append(f"{opt}: {apn!r} has {''.join(bad)!r}; an APN has only letters, digits, '.' and '-' "
                        "(e.g. v-internet, m3-world)")
        return
    for label in apn.split("."):
        if not _APN_LABEL.fullmatch(label):
            problems.append(f"{opt}: {apn!r}: each dot-separated part must be non-empty and start and end "
                            "with a letter or digit")
            return
    if apn.lower() not in KNOWN_APNS:
        known = ", ".join(f"{k} ({v})" for k, v in KNOWN_APNS.items())
        warnings.append(f"--apn {apn!r} is not a Vietnamese carrier's public APN ({known}); "
                        "fine for a private APN, otherwise check the spelling")


def _check_inputs(inputs: object, problems: list[str]) -> list[dict[str, Any]] | None:
    """Only the shape here; names, kinds and channels are the firmware's to judge (it knows the board)."""
    if inputs is None:
        return None
    if not isinstance(inputs, list) or not inputs:
        problems.append("--inputs: expected a non-empty JSON list of input objects (docs/config.md)")
        return None
    for i, entry in enumerate(inputs):
        if not isinstance(entry, dict):
            problems.append(f"--inputs: entry {i} is a {type(entry).__name__}, not an object")
            return None
    return [dict(e) for e in inputs]
