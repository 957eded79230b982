"""MQTT 3.1.1 packets as bytes: encode what the device sends, decode what the broker sends.

Pure: no sockets, no clock. Every outgoing packet is built in one buffer so that it leaves
in one write (several small writes cost ~40 ms each against Nagle and delayed ACKs). The
client encodes PUBLISH into a buffer it allocated at boot (`publish_into`); the rarer
packets are built as one exact-size `bytes`.

Decoders take the first byte and the body (the bytes after the remaining length) and raise
`MalformedPacket` with the reason when the broker's bytes break the spec.
"""
from micropython import const

# Packet types, as the high nibble of the first byte.
CONNECT = const(1)
CONNACK = const(2)
PUBLISH = const(3)
PUBACK = const(4)
PUBREC = const(5)
PUBREL = const(6)
PUBCOMP = const(7)
SUBSCRIBE = const(8)
SUBACK = const(9)
UNSUBSCRIBE = const(10)
UNSUBACK = const(11)
PINGREQ = const(12)
PINGRESP = const(13)
DISCONNECT = const(14)

MAX_REMAINING = const(268435455)  # the most four length bytes can say
SUBACK_FAILURE = const(0x80)

PINGREQ_PACKET = b"\xc0\x00"
DISCONNECT_PACKET = b"\xe0\x00"

# CONNACK return codes (spec 3.2.2.3), named for log lines and health details.
CONNACK_NAMES = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad username or password",
    5: "not authorized",
}


class MalformedPacket(ValueError):
    """The broker sent bytes that break MQTT 3.1.1; str(e) says which rule."""


def connack_name(rc):
    return CONNACK_NAMES.get(rc, "unknown return code")


# --- encoding ---

def length_size(n):
    """Bytes the remaining length `n` takes on the wire (1..4)."""
    if n < 128:
        return 1
    if n < 16384:
        return 2
    if n < 2097152:
        return 3
    if n <= MAX_REMAINING:
        return 4
    raise ValueError("packet too long for MQTT")


def _put_length(buf, off, n):
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            buf[off] = b | 0x80
            off += 1
        else:
            buf[off] = b
            return off + 1


def _put_u16(buf, off, v):
    buf[off] = v >> 8
    buf[off + 1] = v & 0xFF
    return off + 2


def _put_bytes(buf, off, b):
    n = len(b)
    if n > 65535:
        raise ValueError("string over 65535 bytes")
    off = _put_u16(buf, off, n)
    buf[off:off + n] = b
    return off + n


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _check_pid(pid):
    if not 0 < pid < 65536:
        raise ValueError("packet id must be 1..65535")


def _check_topic_name(t):
    if not t:
        raise ValueError("empty topic")
    if b"+" in t or b"#" in t or b"\x00" in t:
        raise ValueError("topic name may not contain wildcards or NUL")


def _packet(first, body_len):
    """An exact-size buffer with its fixed header filled in; returns (buf, offset of body)."""
    buf = bytearray(1 + length_size(body_len) + body_len)
    buf[0] = first
    return buf, _put_length(buf, 1, body_len)


def connect(client_id, keepalive_s, clean_session=True, username=None, password=None,
            will_topic=None, will_payload=b"", will_qos=0, will_retain=False):
    """CONNECT for protocol level 4 (3.1.1). keepalive_s must be 1..65535: 0 turns the
    broker's supervision off, and newer mosquitto refuses it."""
    if not 0 < keepalive_s < 65536:
        raise ValueError("keepalive must be 1..65535 s")
    cid = _b(client_id)
    if not cid and not clean_session:
        raise ValueError("a persistent session needs a client id")
    flags = 0x02 if clean_session else 0
    n = 10 + 2 + len(cid)
    if will_topic is not None:
        wt, wp = _b(will_topic), _b(will_payload)
        _check_topic_name(wt)
        if will_qos not in (0, 1, 2):
            raise ValueError("will QoS must be 0..2")
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
        n += 4 + len(wt) + len(wp)
    if username is not None:
        user = _b(username)
        flags |= 0x80
        n += 2 + len(user)
    if password is not None:
        if username is None:
            raise ValueError("MQTT 3.1.1 allows a password only with a username")
        pw = _b(password)
        flags |= 0x40
        n += 2 + len(pw)
    buf, off = _packet(0x10, n)
    buf[off:off + 7] = b"\x00\x04MQTT\x04"
    buf[off + 7] = flags
    off = _put_u16(buf, off + 8, keepalive_s)
    off = _put_bytes(buf, off, cid)
    if will_topic is not None:
        off = _put_bytes(buf, off, wt)
        off = _put_bytes(buf, off, wp)
    if username is not None:
        off = _put_bytes(buf, off, user)
    if password is not None:
        _put_bytes(buf, off, pw)
    return bytes(buf)


def publish_size(topic, payload, qos=0):
    body = 2 + len(topic) + (2 if qos else 0) + len(payload)
    return 1 + length_size(body) + body


def publish_into(buf, topic, payload, qos=0, retain=False, dup=False, pid=0):
    """Writes a PUBLISH at the start of `buf` (bytearray or memoryview); returns its length.
    topic and payload are bytes (or str, encoded as UTF-8 here)."""
    topic, payload = _b(topic), _b(payload)
    _check_topic_name(topic)
    if qos not in (0, 1):
        raise ValueError("QoS must be 0 or 1")
    if qos:
        _check_pid(pid)
    elif dup:
        raise ValueError("DUP is only for QoS > 0")
    body = 2 + len(topic) + (2 if qos else 0) + len(payload)
    total = 1 + length_size(body) + body
    if total > len(buf):
        raise ValueError("PUBLISH of %d bytes over the %d-byte buffer" % (total, len(buf)))
    buf[0] = 0x30 | (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    off = _put_length(buf, 1, body)
    off = _put_bytes(buf, off, topic)
    if qos:
        off = _put_u16(buf, off, pid)
    buf[off:off + len(payload)] = payload
    return total


def publish(topic, payload, qos=0, retain=False, dup=False, pid=0):
    """The same PUBLISH as `publish_into`, as exact-size bytes."""
    topic, payload = _b(topic), _b(payload)
    buf = bytearray(publish_size(topic, payload, qos))
    publish_into(buf, topic, payload, qos, retain, dup, pid)
    return bytes(buf)


def puback(pid):
    _check_pid(pid)
    return bytes((0x40, 2, pid >> 8, pid & 0xFF))


def subscribe(pid, topics):
    """SUBSCRIBE for [(topic_filter, max_qos), ...] in one packet."""
    _check_pid(pid)
    if not topics:
        raise ValueError("SUBSCRIBE needs at least one topic")
    n = 2
    for t, q in topics:
        if q not in (0, 1, 2):
            raise ValueError("subscription QoS must be 0..2")
        n += 3 + len(_b(t))
    buf, off = _packet(0x82, n)
    off = _put_u16(buf, off, pid)
    for t, q in topics:
        t = _b(t)
        if not t:
            raise ValueError("empty topic filter")
        off = _put_bytes(buf, off, t)
        buf[off] = q
        off += 1
    return bytes(buf)


def unsubscribe(pid, topics):
    """UNSUBSCRIBE for [topic_filter, ...]."""
    _check_pid(pid)
    if not topics:
        raise ValueError("UNSUBSCRIBE needs at least one topic")
    n = 2
    for t in topics:
        n += 2 + len(_b(t))
    buf, off = _packet(0xA2, n)
    off = _put_u16(buf, off, pid)
    for t in topics:
        off = _put_bytes(buf, off, _b(t))
    return bytes(buf)


# --- decoding ---

def parse_header(buf, start, end):
    """Looks at the fixed header in buf[start:end].

    Returns None when more bytes are needed, else (first_byte, remaining_length,
    header_length). Raises MalformedPacket when the framing itself is broken, after which
    the stream cannot be trusted."""
    if end - start < 2:
        return None
    first = buf[start]
    t = first >> 4
    if t == 0 or t == 15:
        raise MalformedPacket("reserved packet type %d" % t)
    n = 0
    shift = 0
    i = start + 1
    while True:
        if i - start > 4:
            raise MalformedPacket("remaining length over 4 bytes")
        if i >= end:
            return None
        b = buf[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return first, n, i - start
        shift += 7


def _expect(first, want_first, body, want_len, name):
    if first != want_first:
        raise MalformedPacket("%s with flags 0x%02x" % (name, first & 0x0F))
    if len(body) != want_len:
        raise MalformedPacket("%s remaining length %d, want %d" % (name, len(body), want_len))


def _u16(body, off):
    return (body[off] << 8) | body[off + 1]


def decode_connack(first, body):
    """Returns (session_present, return_code)."""
    _expect(first, 0x20, body, 2, "CONNACK")
    if body[0] & 0xFE:
        raise MalformedPacket("CONNACK reserved flags set")
    return bool(body[0] & 1), body[1]


def _pid_only(first, want_first, body, name):
    _expect(first, want_first, body, 2, name)
    pid = _u16(body, 0)
    if pid == 0:
        raise MalformedPacket("%s with packet id 0" % name)
    return pid


def decode_puback(first, body):
    """Returns the packet id that was acknowledged."""
    return _pid_only(first, 0x40, body, "PUBACK")


def decode_unsuback(first, body):
    return _pid_only(first, 0xB0, body, "UNSUBACK")


def decode_suback(first, body):
    """Returns (packet_id, return_codes as bytes): 0..2 granted QoS, 0x80 failure."""
    if first != 0x90:
        raise MalformedPacket("SUBACK with flags 0x%02x" % (first & 0x0F))
    if len(body) < 3:
        raise MalformedPacket("SUBACK without return codes")
    for rc in body[2:]:
        if rc > 2 and rc != SUBACK_FAILURE:
            raise MalformedPacket("SUBACK return code 0x%02x" % rc)
    return _u16(body, 0), bytes(body[2:])


def decode_pingresp(first, body):
    _expect(first, 0xD0, body, 0, "PINGRESP")


def decode_publish(first, body):
    """Returns (topic: str, payload: memoryview into body, qos, retain, dup, pid).

    pid is 0 for QoS 0. The payload is a view: copy it (bytes(p)) to keep it."""
    qos = (first >> 1) & 3
    if qos == 3:
        raise MalformedPacket("PUBLISH with QoS 3")
    dup = bool(first & 0x08)
    if dup and not qos:
        raise MalformedPacket("PUBLISH QoS 0 with DUP")
    mv = memoryview(body)
    if len(mv) < 2:
        raise MalformedPacket("PUBLISH shorter than its topic length")
    tlen = _u16(mv, 0)
    off = 2 + tlen
    if tlen == 0 or off + (2 if qos else 0) > len(mv):
        raise MalformedPacket("PUBLISH topic length %d in %d bytes" % (tlen, len(mv)))
    raw_topic = bytes(mv[2:off])
    if b"+" in raw_topic or b"#" in raw_topic or b"\x00" in raw_topic:
        raise MalformedPacket("PUBLISH topic with wildcard or NUL")
    try:
        topic = raw_topic.decode()
    except UnicodeError:
        raise MalformedPacket("PUBLISH topic is not UTF-8")
    pid = 0
    if qos:
        pid = _u16(mv, off)
        off += 2
        if pid == 0:
            raise MalformedPacket("PUBLISH QoS %d with packet id 0" % qos)
    return topic, mv[off:], qos, bool(first & 1), dup, pid
