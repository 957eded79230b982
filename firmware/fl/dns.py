"""DNS A-record lookups as asyncio code over UDP, each with a deadline.

`socket.getaddrinfo` blocks the whole interpreter while it waits (on the ESP32 up to 10-20 s
when the resolver does not answer): no input is read, no event recorded. This resolver sends
one query (RFC 1035 §4.1, recursion desired) to the path's DNS servers in turn and waits for
the answer on the event loop, resending with a growing wait until the deadline. It answers
IPv4 only: the broker and NTP servers are reached over IPv4.
"""
import asyncio
import os

from fl import netio, ticks
from fl.netio import is_ip

PORT = 53
_TYPE_A = 1
_CLASS_IN = 1
_TRY_MS = 1000  # the first wait for an answer; doubled on each round of the servers
_MAX_REPLY = 512  # a UDP answer without EDNS is at most this long


class DNSError(OSError):
    pass


def query(host, qid):
    """The query packet for host's A record, with message id qid."""
    if len(host) > 253 or not host:
        raise DNSError(22, "not a host name: %r" % host)
    q = bytearray(12)
    q[0], q[1] = qid >> 8, qid & 0xFF
    q[2] = 0x01  # RD: the server resolves recursively
    q[5] = 1  # QDCOUNT
    for label in host.rstrip(".").split("."):
        b = label.encode()
        if not 0 < len(b) < 64:
            raise DNSError(22, "not a host name: %r" % host)
        q.append(len(b))
        q.extend(b)
    q.extend(b"\x00\x00\x01\x00\x01")  # root, QTYPE A, QCLASS IN
    return q


def _skip_name(msg, i):
    while True:
        if i >= len(msg):
            raise DNSError(74, "truncated name in the DNS answer")  # EBADMSG
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:  # compression pointer: the name ends here
            return i + 2
        i += n + 1


def parse(msg, qid):
    """The first IPv4 address in the answer to query qid, or None if msg is not that answer
    (a stray or spoofed packet: keep waiting). Raises DNSError when the server says no."""
    if len(msg) < 12 or (msg[0] << 8 | msg[1]) != qid or not msg[2] & 0x80:
        return None
    rcode = msg[3] & 0x0F
    if rcode == 3:
        raise DNSError(-2, "no such name")  # like getaddrinfo's EAI_NONAME
    if rcode:
        raise DNSError(-3, "server failure (rcode %d)" % rcode)
    qd = msg[4] << 8 | msg[5]
    an = msg[6] << 8 | msg[7]
    i = 12
    for _ in range(qd):
        i = _skip_name(msg, i) + 4
    for _ in range(an):
        i = _skip_name(msg, i)
        if i + 10 > len(msg):
            break
        rtype = msg[i] << 8 | msg[i + 1]
        rclass = msg[i + 2] << 8 | msg[i + 3]
        rdlen = msg[i + 8] << 8 | msg[i + 9]
        i += 10
        if rtype == _TYPE_A and rclass == _CLASS_IN and rdlen == 4 and i + 4 <= len(msg):
            return "%d.%d.%d.%d" % (msg[i], msg[i + 1], msg[i + 2], msg[i + 3])
        i += rdlen
    raise DNSError(-5, "no address in the answer")  # EAI_NODATA


def split_server(s, default_port):
    """"1.2.3.4" or "1.2.3.4:5353" -> (ip, port)."""
    if ":" in s:
        host, port = s.rsplit(":", 1)
        return host, int(port)
    return s, default_port


async def resolve(host, servers, timeout_ms, ifname=None):
    """host's IPv4 address as a string. IP literals and `localhost` need no server. Tries
    each server (IP literals, optionally with :port) in turn, waiting 1 s, then 2 s... for
    an answer; raises DNSError (or OSError) once timeout_ms has passed without one."""
    if is_ip(host):
        return host
    if host == "localhost":
        return "127.0.0.1"
    servers = [s for s in servers if s]
    if not servers:
        raise DNSError(-3, "no DNS server known on this path")
    qid = os.urandom(2)
    qid = qid[0] << 8 | qid[1]
    packet = query(host, qid)
    deadline = ticks.after(timeout_ms)
    wait = _TRY_MS
    last = None
    while True:
        for server in servers:
            left = ticks.left(deadline)
            if left <= 0:
                raise DNSError(110, "no answer for %s within %d ms%s" % (
                    host, timeout_ms, " (%s)" % last if last else ""))  # ETIMEDOUT
            ip, port = split_server(server, PORT)
            slot = ticks.after(min(wait, left))
            try:
                reply = await netio.udp_exchange(ip, port, packet, min(wait, left), _MAX_REPLY, ifname,
                                                 lambda m: parse(m, qid))
            except DNSError:
                raise
            except OSError as e:  # this server refused (ICMP unreachable) or the socket failed
                last = "%s: %s" % (server, e)
                reply = None
                await asyncio.sleep_ms(ticks.left(slot))  # no fast loop on a refusing server
            if reply is not None:
                return reply
        wait *= 2
