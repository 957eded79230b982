# MQTT 3.1.1 codec: every expected byte string below was worked out by hand from the spec
# (section numbers in the comments), not produced by the code under test.
from fwtest import eq, ok, raises

from fl import mqtt_codec as c
from fl.mqtt_codec import MalformedPacket


def h(s):
    """Hex with spaces -> bytes."""
    return bytes(int(x, 16) for x in s.split())


def test_connect_full_flags_and_payload_order():
    # 3.1.2: flags = user 0x80 | password 0x40 | will retain 0x20 | will QoS1 0x08 | will 0x04,
    # clean session 0 -> 0xEC. Payload order 3.1.3: client id, will topic, will message, user, password.
    got = c.connect("fl-test1", 60, clean_session=False, username="u", password="p",
                    will_topic="a/s", will_payload=b"offline", will_qos=1, will_retain=True)
    want = (h("10 28 00 04") + b"MQTT" + h("04 EC 00 3C") + h("00 08") + b"fl-test1" + h("00 03") + b"a/s"
            + h("00 07") + b"offline" + h("00 01") + b"u" + h("00 01") + b"p")
    eq(got, want, "CONNECT")


def test_connect_minimal_clean_session():
    eq(c.connect("c", 10), h("10 0D 00 04") + b"MQTT" + h("04 02 00 0A 00 01 63"), "CONNECT")


def test_connect_username_without_password():
    got = c.connect("c", 65535, clean_session=False, username="ab")
    eq(got, h("10 11 00 04") + b"MQTT" + h("04 80 FF FF 00 01 63 00 02") + b"ab", "CONNECT")


def test_connect_refuses_keepalive_zero_and_bad_arguments():
    eq(str(raises(ValueError, c.connect, "c", 0)), "keepalive must be 1..65535 s")
    raises(ValueError, c.connect, "c", 65536)
    eq(str(raises(ValueError, c.connect, "c", 10, password="p")),
       "MQTT 3.1.1 allows a password only with a username")
    raises(ValueError, c.connect, "", 10, clean_session=False)
    raises(ValueError, c.connect, "c", 10, will_topic="a/#", will_payload=b"x")


def test_publish_qos1_retain_dup():
    # 3.3.1: 0x30 | DUP 0x08 | QoS1 0x02 | RETAIN 0x01; body = 2+3 topic, 2 pid, 2 payload = 9.
    eq(c.publish("a/b", b"hi", qos=1, retain=True, dup=True, pid=10), h("3B 09 00 03 61 2F 62 00 0A 68 69"))


def test_publish_qos0_empty_payload():
    eq(c.publish("t", b""), h("30 03 00 01 74"))


def test_publish_two_byte_remaining_length():
    # 2.2.3: 200 = 0x48 + 1*128 -> C8 01.
    pkt = c.publish("t", bytes(197))
    eq(pkt[:5], h("30 C8 01 00 01"), "header")
    eq(len(pkt), 203, "length")


def test_publish_into_reports_length_and_rejects_overflow():
    buf = bytearray(16)
    eq(c.publish_into(buf, "a/b", "hi", qos=1, pid=65535), 11, "length")
    eq(bytes(buf[:11]), h("32 09 00 03 61 2F 62 FF FF 68 69"), "bytes")
    e = raises(ValueError, c.publish_into, buf, "a/b", bytes(20), 1, False, False, 1)
    eq(str(e), "PUBLISH of 29 bytes over the 16-byte buffer")


def test_publish_rejects_bad_arguments():
    raises(ValueError, c.publish, "a/+", b"x")
    raises(ValueError, c.publish, "a/#", b"x")
    raises(ValueError, c.publish, "", b"x")
    raises(ValueError, c.publish, "a", b"x", 2, False, False, 1)
    raises(ValueError, c.publish, "a", b"x", 1, False, False, 0)
    raises(ValueError, c.publish, "a", b"x", 1, False, False, 65536)
    raises(ValueError, c.publish, "a", b"x", 0, False, True)


def test_length_size_boundaries():
    for n, want in ((0, 1), (127, 1), (128, 2), (16383, 2), (16384, 3), (2097151, 3), (2097152, 4),
                    (268435455, 4)):
        eq(c.length_size(n), want, "length_size(%d)" % n)
    raises(ValueError, c.length_size, 268435456)


def test_puback_subscribe_unsubscribe_ping_disconnect():
    eq(c.puback(300), h("40 02 01 2C"), "PUBACK")
    eq(c.subscribe(1, [("a/#", 1), ("b", 0)]), h("82 0C 00 01 00 03 61 2F 23 01 00 01 62 00"), "SUBSCRIBE")
    eq(c.unsubscribe(2, ["a/#"]), h("A2 07 00 02 00 03 61 2F 23"), "UNSUBSCRIBE")
    eq(c.PINGREQ_PACKET, h("C0 00"), "PINGREQ")
    eq(c.DISCONNECT_PACKET, h("E0 00"), "DISCONNECT")
    raises(ValueError, c.puback, 0)
    raises(ValueError, c.subscribe, 1, [])
    raises(ValueError, c.subscribe, 1, [("a", 3)])


def test_parse_header_lengths():
    for enc, n in (("00", 0), ("7F", 127), ("80 01", 128), ("FF 7F", 16383), ("80 80 01", 16384),
                   ("FF FF 7F", 2097151), ("80 80 80 01", 2097152), ("FF FF FF 7F", 268435455)):
        b = h("30 " + enc)
        eq(c.parse_header(b, 0, len(b)), (0x30, n, 1 + len(enc.split())), enc)


def test_parse_header_needs_more_bytes():
    eq(c.parse_header(b"\x30", 0, 1), None, "one byte")
    b = h("30 80 80")
    eq(c.parse_header(b, 0, 3), None, "unfinished length")
    b = h("00 00 30 05")
    eq(c.parse_header(b, 2, 4), (0x30, 5, 2), "at an offset")


def test_parse_header_rejects_bad_framing():
    b = h("30 FF FF FF FF 01")
    eq(str(raises(MalformedPacket, c.parse_header, b, 0, len(b))), "remaining length over 4 bytes")
    b = h("30 FF FF FF FF")  # fifth length byte not even here yet: already known bad
    eq(str(raises(MalformedPacket, c.parse_header, b, 0, len(b))), "remaining length over 4 bytes")
    eq(str(raises(MalformedPacket, c.parse_header, h("00 00"), 0, 2)), "reserved packet type 0")
    eq(str(raises(MalformedPacket, c.parse_header, h("F0 00"), 0, 2)), "reserved packet type 15")
    ok(issubclass(MalformedPacket, ValueError), "MalformedPacket is a ValueError")


def test_decode_connack():
    eq(c.decode_connack(0x20, h("00 00")), (False, 0), "accepted")
    eq(c.decode_connack(0x20, h("01 04")), (True, 4), "refused")
    eq(str(raises(MalformedPacket, c.decode_connack, 0x20, h("00 00 00"))), "CONNACK remaining length 3, want 2")
    raises(MalformedPacket, c.decode_connack, 0x20, h("02 00"))
    raises(MalformedPacket, c.decode_connack, 0x21, h("00 00"))


def test_connack_names():
    eq(c.connack_name(1), "unacceptable protocol version")
    eq(c.connack_name(2), "identifier rejected")
    eq(c.connack_name(3), "server unavailable")
    eq(c.connack_name(4), "bad username or password")
    eq(c.connack_name(5), "not authorized")
    eq(c.connack_name(9), "unknown return code")


def test_decode_puback_suback_unsuback_pingresp():
    eq(c.decode_puback(0x40, h("01 2C")), 300, "PUBACK")
    raises(MalformedPacket, c.decode_puback, 0x40, h("00 00"))
    raises(MalformedPacket, c.decode_puback, 0x40, h("00 01 00"))
    raises(MalformedPacket, c.decode_puback, 0x42, h("00 01"))
    eq(c.decode_suback(0x90, h("00 07 01 80 00")), (7, h("01 80 00")), "SUBACK")
    eq(str(raises(MalformedPacket, c.decode_suback, 0x90, h("00 07 03"))), "SUBACK return code 0x03")
    raises(MalformedPacket, c.decode_suback, 0x90, h("00 07"))
    eq(c.decode_unsuback(0xB0, h("00 02")), 2, "UNSUBACK")
    eq(c.decode_pingresp(0xD0, b""), None, "PINGRESP")
    raises(MalformedPacket, c.decode_pingresp, 0xD0, b"\x00")


def test_decode_publish_qos1_and_qos0():
    topic, payload, qos, retain, dup, pid = c.decode_publish(0x3B, h("00 03 61 2F 62 00 0A 68 69"))
    eq((topic, bytes(payload), qos, retain, dup, pid), ("a/b", b"hi", 1, True, True, 10))
    topic, payload, qos, retain, dup, pid = c.decode_publish(0x30, h("00 01 74"))
    eq((topic, bytes(payload), qos, retain, dup, pid), ("t", b"", 0, False, False, 0))


def test_decode_publish_round_trip_binary_payload():
    pkt = c.publish("x/y", bytes(range(256)), qos=1, pid=77)
    first, n, hl = c.parse_header(pkt, 0, len(pkt))
    eq(n + hl, len(pkt), "framing")
    t, p, q, r, d, pid = c.decode_publish(first, memoryview(pkt)[hl:])
    eq((t, bytes(p), q, pid), ("x/y", bytes(range(256)), 1, 77))


def test_decode_publish_rejects_malformed():
    eq(str(raises(MalformedPacket, c.decode_publish, 0x36, h("00 01 74 00 01"))), "PUBLISH with QoS 3")
    eq(str(raises(MalformedPacket, c.decode_publish, 0x30, h("00 09 74"))), "PUBLISH topic length 9 in 3 bytes")
    raises(MalformedPacket, c.decode_publish, 0x32, h("00 01 74 00"))  # no room for the packet id
    raises(MalformedPacket, c.decode_publish, 0x32, h("00 01 74 00 00"))  # packet id 0
    raises(MalformedPacket, c.decode_publish, 0x38, h("00 01 74"))  # DUP on QoS 0
    raises(MalformedPacket, c.decode_publish, 0x30, h("00"))
    eq(str(raises(MalformedPacket, c.decode_publish, 0x30, h("00 02 FF FE"))), "PUBLISH topic is not UTF-8")
    raises(MalformedPacket, c.decode_publish, 0x30, h("00 01 23"))  # '#'
