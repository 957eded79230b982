"""SNTP (RFC 4330) as asyncio code over UDP: UTC from the configured servers, with a deadline.

`ntptime` blocks the interpreter for its lookup and its exchange. Here both run on the event
loop (names through fl.dns), one server after another until one gives a usable answer or the
deadline passes. A reply counts only if it answers our request (its originate timestamp is
our transmit timestamp), comes from a synchronised server in server mode with a real
stratum (0 is a kiss-of-death), and tells a plausible time.
"""
import os
import struct

from fl import dns, netio, ticks
from fl.log import Logger

_log = Logger("sntp")
PORT = 123
NTP_DELTA = 2208988800  # 1900-01-01 to 1970-01-01
PLAUSIBLE_AFTER = 1704067200  # 2024-01-01 UTC: anything earlier is not a time to set
DHCP = "dhcp"  # in the server list: the server the path's DHCP gives (see Path.dhcp_ntp)
SERVER_MS = 1500  # one server's share (lookup and exchange): a silent one must leave time for the next


def request():
    """A client request (LI 0, version 4, mode 3) whose transmit timestamp is random: the
    reply must echo it, so a stray or forged datagram cannot set the clock."""
    q = bytearray(48)
    q[0] = 0x23
    q[40:48] = os.urandom(8)
    return q


def parse(msg, req):
    """UTC in ms from a reply to req, or None if msg is not a usable answer to it."""
    if len(msg) < 48 or msg[24:32] != req[40:48]:
        return None  # not an answer to this request
    if msg[0] & 7 != 4 or not 1 <= msg[1] <= 15 or msg[0] >> 6 == 3:
        _log.warn("ignoring an unusable NTP reply (mode %d, stratum %d, leap %d)", msg[0] & 7, msg[1], msg[0] >> 6)
        return False
    secs, frac = struct.unpack("!II", msg[40:48])
    unix = secs - NTP_DELTA
    if unix < PLAUSIBLE_AFTER:
        _log.warn("NTP time %d is not plausible", unix)
        return False
    return unix * 1000 + ((frac * 1000 + (1 << 31)) >> 32)


async def fetch(servers, path, timeout_ms):
    """UTC in ms (the server's time plus half the round trip), or None when no server gave a
    usable answer within timeout_ms. `servers`: names, IPv4 literals (optionally :port) or
    "dhcp". Never blocks the event loop, but returns at once when there is nothing to ask or
    every server refuses fast: the caller paces its retries."""
    deadline = ticks.after(timeout_ms)
    why = []
    for server in servers:
        left = ticks.left(deadline)
        if left <= 0:
            break
        if server == DHCP:
            server = path.dhcp_ntp()
            if not server:
                continue
        mine = ticks.after(min(left, SERVER_MS))
        try:
            host, port = dns.split_server(server, PORT)
            ip = await dns.resolve(host, path.dns_servers(), ticks.left(mine), path.ifname)
            left = ticks.left(mine)
            if left <= 0:
                why.append("%s: no time left after the lookup" % server)
                continue
            req = request()
            t0 = ticks.ms()
            got = await netio.udp_exchange(ip, port, req, left, 64, path.ifname, lambda m: parse(m, req))
            if got:
                return got + ticks.diff(ticks.ms(), t0) // 2
            why.append("%s: %s" % (server, "no answer" if got is None else "unusable answer"))
        except (OSError, ValueError) as e:  # ValueError: a port that is not a number
            why.append("%s: %s" % (server, e))
    _log.warn("clock sync failed: %s", "; ".join(why) or "no server to ask")
    return None
