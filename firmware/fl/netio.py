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


def resolve(host, port):
    """Address tuple for host:port. IP literals never touch DNS."""
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0][-1]


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
