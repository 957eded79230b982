"""The receive side of `fl.mqtt.MQTTClient`: one task per connection reads the socket into the
client's receive buffer, frames packets and hands each to the client's state.

Kept apart from fl.mqtt because it is a job of its own (bytes in, state changes out) and so
the two compile and load as separate, smaller pieces. Functions, not a class: they work on the
client's buffers and state directly (`c` below), so there is no second object per connection.

What it guarantees: a malformed packet that keeps the framing is logged, counted and ignored;
one that breaks the framing drops the connection; a packet larger than the buffer is skipped
in buffer-sized reads (a QoS 1 PUBLISH is still acknowledged); the application's on_message
may raise without ending the loop; EOF and socket errors drop the connection with the reason.
"""
from fl import mqtt_codec as codec


class ConnectionLost(Exception):
    """The connection is no longer usable; str() says why. (fl.mqtt raises it too.)"""


async def _read(c, off):
    """Reads what is there into rx[off:]; returns the count. EOF is an error."""
    while True:
        n = await c._stream.readinto(c._rxmv[off:])
        if n:
            c._path.rx_b += n
            return n
        if n == 0:
            raise ConnectionLost("broker closed the connection")
        # None: TLS had only part of a record; wait for the rest


async def rx_loop(c, epoch):
    """Runs until connection `epoch` of client c drops (then drops it, saying why)."""
    rx, mv, s = c._rx, c._rxmv, c._stream
    try:
        while True:
            hdr = codec.parse_header(rx, c._rs, c._re)  # MalformedPacket: framing lost
            if hdr is not None:
                first, n, hl = hdr
                if n > c._max_packet:
                    await _skip_oversized(c, first, n, hl)
                    continue
                end = c._rs + hl + n
                if end <= c._re:
                    body = mv[c._rs + hl:end]
                    c._rs = end
                    c._rx_count += 1
                    c.progress += 1
                    pid = _dispatch(c, first, body)
                    if pid:  # after delivery: a crash before it means the broker offers it again
                        await c._send(codec.puback(pid))
                    if c._rs == c._re:
                        c._rs = c._re = 0
                    continue
            if c._rs:  # move the partial packet to the front so it can grow to full size
                k = c._re - c._rs
                mv[0:k] = mv[c._rs:c._re]
                c._rs, c._re = 0, k
            n = await s.readinto(mv[c._re:])
            if n:
                c._re += n
                c._path.rx_b += n
            elif n == 0:
                raise ConnectionLost("broker closed the connection")
            # None: TLS had only part of a record; wait for the rest
    except codec.MalformedPacket as e:
        c.bad_packets += 1
        c._count("mqtt_bad_packets")
        c._drop("framing lost, malformed packet from broker: %s" % e, epoch)
    except Exception as e:
        if c._connack and c._connack[1]:
            # The broker ends the connection after a refusing CONNACK (a close or a reset):
            # expected, and fl.mqtt reports the refusal (last_error never shows the end first).
            c._drop(None, epoch)
            return
        tls = c._tls_failure(e)
        if tls is not None:
            c._fault("mqtt_tls", True, str(tls))
            c._drop(str(tls), epoch)
        else:
            c._drop(str(e) if isinstance(e, ConnectionLost) else "receive failed: %s" % c.describe(e), epoch)


async def _skip_oversized(c, first, n, hl):
    """Reads past a packet bigger than max_packet in buffer-sized chunks. A QoS 1 PUBLISH is
    still acknowledged, or the broker would offer it again on every reconnect."""
    c.oversized += 1
    c._count("mqtt_oversized")
    c.log.warn("ignoring oversized packet from broker: type %d, %d bytes (max %d)", first >> 4, n, c._max_packet)
    mv = c._rxmv
    total = hl + n
    pid = 0
    if first & 0xF6 == 0x32:  # PUBLISH QoS 1: read on until its topic and packet id are in
        if c._rs:
            k = c._re - c._rs
            mv[0:k] = mv[c._rs:c._re]
            c._rs, c._re = 0, k
        want = min(len(mv), total)
        while c._re < want:
            c._re += await _read(c, c._re)
        p = hl + 2 + ((mv[hl] << 8) | mv[hl + 1])
        if p + 2 <= c._re:
            pid = (mv[p] << 8) | mv[p + 1]
    skip = total - (c._re - c._rs)
    if skip <= 0:
        c._rs += total
    else:
        c._rs = c._re = 0
        while skip:
            got = await _read(c, 0)
            if got > skip:  # the next packet starts here
                c._rs, c._re = skip, got
                break
            skip -= got
    if pid:
        await c._send(codec.puback(pid))


def _dispatch(c, first, body):
    """Handles one packet; returns the packet id to acknowledge (incoming QoS 1), else 0."""
    t = first >> 4
    try:
        if t == codec.PUBACK:
            c._acked(codec.decode_puback(first, body))
        elif t == codec.PUBLISH:
            topic, payload, qos, retain, dup, pid = codec.decode_publish(first, body)
            if qos > 1:
                raise codec.MalformedPacket("QoS %d PUBLISH on a QoS 1 subscription" % qos)
            _deliver(c, topic, bytes(payload))
            return pid
        elif t == codec.PINGRESP:
            codec.decode_pingresp(first, body)
            c.pongs += 1
        elif t == codec.CONNACK and c._rx_count == 1:  # only as the first packet
            c._connack = codec.decode_connack(first, body)
            c._reply.set()
        elif t == codec.SUBACK:
            pid, codes = codec.decode_suback(first, body)
            if pid == c._sub_pid and c._sub_pid:
                c._suback = codes
                c._reply.set()
        else:
            raise codec.MalformedPacket("unexpected packet type %d from broker" % t)
    except codec.MalformedPacket as e:
        c.bad_packets += 1
        c._count("mqtt_bad_packets")
        c.log.warn("ignoring malformed packet from broker: %s", e)
    return 0


def _deliver(c, topic, payload):
    if c._on_message is None:
        return
    try:
        c._on_message(topic, payload)
    except Exception as e:
        c.callback_errors += 1
        c._count("mqtt_callback_errors")
        c.log.error("on_message failed for %s (%d bytes): %s", topic, len(payload), c.describe(e))
