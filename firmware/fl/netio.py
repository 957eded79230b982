"""Opens a TCP (optionally TLS) stream with a deadline, as asyncio streams.

Every path (Wi-Fi, later PPP) opens its sockets here so that each socket can be bound to
the interface it belongs to and closed with it.
"""
import asyncio
import errno
import select
import socket

from fl import ticks

IPPROTO_TCP = 6
TCP_NODELAY = 1  # same value in Linux and lwIP
# Pins a socket to one path when two are up. 25 on Linux; lwIP's value differs (0x100b), so
# prefer the port's own constant.
SO_BINDTODEVICE = getattr(socket, "SO_BINDTODEVICE", 25)


class ConnectError(OSError):
    pass


def is_ip(host):
    """True for a dotted IPv4 literal: it needs no lookup."""
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p.isdigit() or len(p) > 3 or int(p) > 255:
            return False
    return True


def sockaddr(ip, port, kind=socket.SOCK_STREAM):
    """The socket address for an IPv4 literal. getaddrinfo answers a literal at once, without
    DNS; it must never see a name here (it would block the interpreter while it asks)."""
    if not is_ip(ip):
        raise ValueError("not an IPv4 address: %r" % ip)
    return socket.getaddrinfo(ip, port, 0, kind)[0][-1]


async def resolve(host, port, path, timeout_ms):
    """Address for host:port over `path`, looked up with fl.dns on the event loop (bounded by
    timeout_ms); IP literals need no lookup (and fl.dns is then never loaded)."""
    if is_ip(host):
        return sockaddr(host, port)
    from fl import dns

    ip = await dns.resolve(host, path.dns_servers(), timeout_ms, path.ifname)
    return sockaddr(ip, port)


async def udp_exchange(ip, port, packet, timeout_ms, max_reply, ifname, accept):
    """Sends one datagram to ip:port and waits (on the event loop, at most timeout_ms) for a
    reply that accept(reply) turns into something other than None, which it returns. None on
    timeout; OSError if the socket fails (e.g. the port is unreachable)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        if ifname:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname)
        sock.setblocking(False)
        # Connected: the stack drops datagrams from anyone else, and reports an unreachable port.
        sock.connect(sockaddr(ip, port, socket.SOCK_DGRAM))
        sock.send(packet)
        stream = asyncio.StreamReader(sock)
        deadline = ticks.after(timeout_ms)
        while True:
            left = ticks.left(deadline)
            if left <= 0:
                return None
            try:
                reply = await asyncio.wait_for_ms(stream.read(max_reply), left)
            except asyncio.TimeoutError:
                return None
            got = accept(reply)
            if got is not None:
                return got
    finally:
        sock.close()


async def _wait_writable(sock, timeout_ms):
    poller = select.poll()
    poller.register(sock, select.POLLOUT | select.POLLERR | select.POLLHUP)
    deadline = ticks.add(ticks.ms(), timeout_ms)
    while True:
        for _, ev in poller.poll(0):
            if ev & (select.POLLERR | select.POLLHUP):
                raise ConnectError(errno.ECONNREFUSED, "connection refused")
            if ev & select.POLLOUT:
                return
        if ticks.diff(deadline, ticks.ms()) <= 0:
            raise ConnectError(errno.ETIMEDOUT, "connect timed out after %d ms" % timeout_ms)
        await asyncio.sleep_ms(5)


async def open_stream(addr, timeout_ms, ssl_ctx=None, server_hostname=None, ifname=None):
    """Returns (stream, raw_socket). The caller owns both; closing the raw socket ends the stream.

    TLS handshakes happen on the first read/write, inside whatever deadline the caller
    puts around its first exchange (the MQTT CONNECT)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        try:
            # Without it every small write waits for the peer's delayed ACK: ~40 ms a message.
            sock.setsockopt(IPPROTO_TCP, TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass
        if ifname:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname)
        sock.setblocking(False)
        try:
            sock.connect(addr)
        except OSError as e:
            if e.errno != errno.EINPROGRESS:
                raise
        await _wait_writable(sock, timeout_ms)
        raw = sock
        if ssl_ctx is not None:
            sock = ssl_ctx.wrap_socket(sock, server_side=False, do_handshake_on_connect=False,
                                       server_hostname=server_hostname)
        return asyncio.StreamReader(sock), raw
    except BaseException:
        sock.close()
        raise
