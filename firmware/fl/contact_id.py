"""Contact ID (SIA DC-05) messages as a receiver's line card shows them: `ACCT 18 QXYZ GG CCC S`.

The device never sends these (it sends JSON over MQTT, each event with its Contact ID code), so
the application never imports this module and its code takes no RAM on the board; it is kept
here, beside the codes the firmware raises, for a receiver-side or dialler-style path to use.
"""
from fl.events import valid_code

_Q_DIGIT = {"new": "1", "restore": "3", "1": "1", "3": "3", "6": "6"}


def _digit_value(c):
    v = int(c, 16)
    return 10 if v == 0 else v


def contact_id_message(account_hex4, q, code, partition, zone):
    """`ACCT 18 QXYZ GG CCC S`: S makes the digit sum a multiple of 15 (0 counts as 10)."""
    acct = str(account_hex4).upper()
    if len(acct) != 4 or any(c not in "0123456789ABCDEF" for c in acct):
        raise ValueError("bad account %r: want 4 hex digits" % (account_hex4,))
    qd = _Q_DIGIT.get(q)
    if qd is None:
        raise ValueError("bad q %r: want new, restore, 1, 3 or 6" % (q,))
    if not valid_code(code):
        raise ValueError("bad code %r: want 3 digits" % (code,))
    if type(partition) is not int or not 0 <= partition <= 99:
        raise ValueError("bad partition %r: want 0..99" % (partition,))
    if type(zone) is not int or not 0 <= zone <= 999:
        raise ValueError("bad zone %r: want 0..999" % (zone,))
    body = "%s18%s%s%02d%03d" % (acct, qd, code, partition, zone)
    total = 0
    for c in body:
        total += _digit_value(c)
    s = 15 - total % 15  # 1..15; a value of 10 is sent as digit 0
    check = "0" if s == 10 else "0123456789ABCDEF"[s]
    return "%s 18 %s%s %02d %03d %s" % (acct, qd, code, partition, zone, check)
