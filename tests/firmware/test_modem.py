# fl.modem's state machine against a scripted modem on an in-memory UART (the HIL suite runs it
# against firelink.virtual.modemsim on a pty): registration denied and "no data service" are distinct
# faults, the APN comes from the SIM's operator, the signal formula, a wrong PIN tried once.

from fwtest import eq, ok

from fl import modem as M
from fl.health import Health
from uart_pipe import UartPipe

TIMEOUT_S = 60


class Pipe(UartPipe):
    def __init__(self, answers):
        super().__init__()
        self.answers = answers  # command -> reply text (str) or callable(cmd) -> str
        self.commands = []

    def write(self, data):
        cmd = bytes(data).rstrip(b"\r").decode()
        self.commands.append(cmd)
        a = self.answers.get(cmd, "OK")
        if callable(a):
            a = a(cmd)
        if a is not None:
            self.rx.append(("\r\n" + a + "\r\n").encode())
            self._ev.set()

    async def drain(self):
        pass


class Hw:
    ifname = None
    ppp_owns_uart = False
    pwrkey_on_ms = 1
    pwrkey_off_ms = 1
    reset_ms = 1

    def __init__(self, pipe):
        self.pipe = pipe
        self.pulses = []
        self.up = False

    def open(self):
        return self.pipe

    async def pulse(self, line, ms):
        self.pulses.append(line)

    def urc(self, line):
        pass

    async def data_start(self, timeout_ms):
        self.up = True
        return True

    def data_up(self):
        return self.up

    async def data_stop(self):
        self.up = False

    def route(self, addr):
        return addr

    def dns_servers(self):
        return ()


BASE = {"AT+CPIN?": "+CPIN: READY\r\n\r\nOK", "AT+CICCID": "+ICCID: 8984\r\n\r\nOK",
        "AT+CGSN": "861234567890123\r\n\r\nOK", "AT+CIMI": "452020123456789\r\n\r\nOK",
        "AT+CSQ": "+CSQ: 25,99\r\n\r\nOK", "AT+COPS?": '+COPS: 0,0,"VinaPhone",7\r\n\r\nOK',
        "ATD*99#": "CONNECT 150000000", "AT+CEREG?": "+CEREG: 0,1\r\n\r\nOK",
        "AT+CGMR": "+CGMR: A011B07A7670M7_F\r\n\r\nOK",
        "AT+CPSI?": "+CPSI: LTE,Online,452-02,0x1A2B,12345678,123,EUTRAN-BAND3,1300,5,5,20,45,37,12\r\n\r\nOK"}


async def climb(answers, secrets=None, cfg=None):
    pipe = Pipe(dict(BASE, **answers))
    health = Health()
    m = M.Modem(Hw(pipe), cfg or {"lte_only": True}, secrets, health)
    try:
        await m._climb(0)
        err = None
    except (M.Step, M.Stop) as e:
        err = e
    if m._reader is not None:
        m._reader.cancel()
    return m, pipe, health, err


async def test_apn_from_the_operator_and_data():
    m, pipe, health, err = await climb({})
    eq(err, None, "climbed")
    eq(m.state, "data", "state")
    ok('AT+CGDCONT=1,"IP","m3-world"' in pipe.commands, "VinaPhone's APN: %r" % pipe.commands)
    ok('AT+CGAUTH=1,1,"mms","mms"' in pipe.commands, "its PAP login")
    eq((m.info["rssi_dbm"], m.info["imsi_plmn"]), (-63, "45202"), "signal and operator")
    eq(health.faults, {}, "no fault")


async def test_denied_and_no_data_service_are_distinct():
    m, pipe, health, err = await climb({"AT+CEREG?": "+CEREG: 0,3\r\n\r\nOK"})
    ok(isinstance(err, M.Step), "a step failed")
    eq(health.faults.get(M.NO_SERVICE), "registration denied", "denied")
    m, pipe, health, err = await climb({"AT+CEREG?": "+CEREG: 0,7\r\n\r\nOK"})
    eq(health.faults.get(M.NO_SERVICE), "no data service (SMS only): APN or data plan?", "SMS only")


async def test_wrong_pin_is_tried_once_and_stops():
    m, pipe, health, err = await climb({"AT+CPIN?": "+CPIN: SIM PIN\r\n\r\nOK", "AT+CPIN=0000": "+CME ERROR: 16"},
                                       {"sim_pin": "0000"})
    ok(isinstance(err, M.Stop), "given up: %r" % err)
    eq([c for c in pipe.commands if c.startswith("AT+CPIN=")], ["AT+CPIN=0000"], "one try")
    eq(health.faults.get(M.SIM_FAULT), "SIM PIN refused", "fault")


async def test_sim_missing_and_low_signal():
    m, pipe, health, err = await climb({"AT+CPIN?": "+CME ERROR: 10"})
    eq(health.faults.get(M.SIM_FAULT), "SIM not inserted", "missing")
    m, pipe, health, err = await climb({"AT+CSQ": "+CSQ: 3,99\r\n\r\nOK"})
    eq(health.faults.get(M.LOW_SIGNAL), "-107 dBm", "low signal")


async def test_health_fields_full_and_compact():
    m, pipe, health, err = await climb({})
    eq(err, None, "climbed")
    full = m.describe(True)
    eq({k: full[k] for k in ("op", "act", "band", "apn", "iccid", "imei", "fw")},
       {"op": "VinaPhone", "act": "LTE", "band": "B3", "apn": "m3-world", "iccid": "8984",
        "imei": "861234567890123", "fw": "A011B07A7670M7_F"}, "identity")
    # A76XX offsets: RSRQ (20-40)/2 = -10 dB, RSRP 45-140 = -95 dBm, RSSNR 12 dB.
    eq((full["dbm"], full["rsrp"], full["rsrq"], full["sinr"], full["reg"], full["state"]),
       (-63, -95, -10, 12, 1, "data"), "signal and registration")
    eq(full["resets"], {"redial": 0, "cfun": 0, "pwrkey": 0, "reset": 0}, "reset counts")
    compact = m.describe(False)
    ok("iccid" not in compact and "fw" not in compact and compact["rsrp"] == -95, "compact: %r" % compact)
    gen = m.ident_gen
    m._ident("band", "B3")
    eq(m.ident_gen, gen, "no change, same generation")
    m._ident("band", "B1")
    eq(m.ident_gen, gen + 1, "a new band is news")


async def test_modem_without_cgmr_or_cpsi_still_climbs():
    m, pipe, health, err = await climb({"AT+CGMR": "ERROR", "AT+CPSI?": "ERROR"})
    eq((err, m.state), (None, "data"), "climbed")
    d = m.describe(True)
    eq((d["fw"], d["band"], "rsrp" in d), (None, None, False), "what it did not say is absent")


def test_cpsi_per_model_and_other_systems():
    lte = "LTE,Online,452-04,0x1A2B,12345678,123,EUTRAN-BAND3,1300,5,5,%d,%d,%d,%d"
    eq(M.cpsi(lte % (20, 45, 37, 12), "A011B07A7670M7_F"),
       {"act": "LTE", "band": "B3", "rsrq": -10, "rsrp": -95, "rssi_lte": -73, "sinr": 12}, "A76XX offsets")
    eq(M.cpsi(lte % (-100, -950, -730, 120), "LE20B04SIM7600M22"),
       {"act": "LTE", "band": "B3", "rsrq": -10, "rsrp": -95, "rssi_lte": -73, "sinr": 12}, "SIM7600 tenths")
    eq(M.cpsi("NO SERVICE,Online", None), {"act": "NO SERVICE"}, "no service")
    eq(M.cpsi("LTE,Online,452-04,x,y,z,EUTRAN-BAND3,1300,5,5,a,b,c,d", None), {"act": "LTE", "band": "B3"},
       "garbage numbers: what parses")
    eq(M.cops('0,0,"Viettel",7'), ("Viettel", 7), "operator and AcT")
    eq(M.cops("0"), (None, None), "no operator")


def test_signal_formula():
    eq([M.csq_dbm(v) for v in (0, 10, 31, 99)], [-113, -93, -51, None], "2*rssi-113")


async def test_silent_module_climbs_to_a_power_cycle():
    pipe = Pipe({"AT": None})  # never answers
    hw = Hw(pipe)
    m = M.Modem(hw, {}, None, Health())
    M.BOOT_MS = 1500
    try:
        await m._climb(0)
        ok(False, "climbed without answers")
    except M.Step as e:
        eq(e.rung, 3, "next rung: power cycle")
    eq(hw.pulses, ["pwrkey"], "one press to switch it on")
    ok(M.DEAD in m.health.faults, "modem_dead")
