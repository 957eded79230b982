"""The cellular modem (SIMCom A7670 / SIM7600) as a state machine, and the 4G path over it.

    off → booting → at_ready → sim_ready → registered → data

Each step has its deadline (../shared/reference/cellular.md has the timings). What breaks
climbs the recovery ladder, each rung counted, with a growing pause between attempts:
  1 redial (leave data mode, check registration, dial again)
  2 radio off/on (AT+CFUN=0/1)
  3 power cycle (PWRKEY held for the board's off time, then on)
  4 RESET line (only for a module that no longer answers)
A wrong SIM PIN is never retried (three wrong tries lock the SIM): the modem stays off until
the config changes and the device restarts. Registration denied and "no data service" are
faults of their own. Nothing here ever resets the ESP32: the alarm path goes on over Wi-Fi.

The hardware layer gives `hw` (fl/hal): `open()` → an asyncio stream to the modem's UART,
`async pulse(line, ms)` for "pwrkey" / "reset" with the board's polarity and widths in
`hw.pwrkey_on_ms`, `hw.pwrkey_off_ms`, `hw.reset_ms`, `urc(line)` (sees every unsolicited
line first), `async data_start(timeout_ms) -> bool` after CONNECT (PPP on the ESP32),
`data_up() -> bool`, `async data_stop()`, `ppp_owns_uart` (True: the AT reader stops while
data mode is up), `route(addr)`, `dns_servers()`, `ifname`.
"""
import asyncio

from fl import ticks
from fl.at import AT, ATError, ATTimeout
from fl.link import Path
from fl.log import Logger

_log = Logger("modem")

BOOT_MS = 20000  # UART answers ~11 s after PWRKEY (A7670 `*ATREADY`)
SIM_MS = 20000  # +CME ERROR 13/14 "SIM busy" is normal for a few seconds after boot
REG_MS = 120000
DIAL_MS = 15000
DATA_MS = 20000  # CONNECT to an address (PPP's IPCP)
COPS_MS = 60000
POWER_GAP_MS = 2000  # after power off, before power on (module's requirement)
BACKOFF_MS = (2000, 5000, 15000, 30000, 60000, 120000, 300000)
LOW_SIGNAL_DBM = -105  # installers' "marginal" below this (CSQ rssi < 5)

# MCC-MNC → (APN, user, password, auth) for Vietnam's carriers (cellular.md).
APNS = {"45204": ("v-internet", "", "", "none"), "45202": ("m3-world", "mms", "mms", "pap"),
        "45201": ("m-wap", "mms", "mms", "pap"), "45205": ("internet", "", "", "none")}
_AUTH = {"none": 0, "pap": 1, "chap": 2}

# Faults this module raises (health names); the app maps them to events.
SIM_FAULT = "modem_sim"
NO_SERVICE = "modem_service"
LOW_SIGNAL = "modem_signal"
DEAD = "modem_dead"


class Stop(Exception):
    """A fault that must not be retried (wrong PIN, SIM locked)."""


class Step(Exception):
    """A step failed: `rung` is the ladder rung that should follow."""

    def __init__(self, msg, rung):
        super().__init__(msg)
        self.rung = rung


def cpsi(v, fw):
    """+CPSI? (after the prefix) → {"act", "band", "rsrp", "rsrq", "rssi_lte", "sinr"} for what
    the modem gives. LTE: `LTE,Online,MCC-MNC,TAC,SCellID,PCellID,EUTRAN-BANDn,EARFCN,DLBW,ULBW,
    RSRQ,RSRP,RSSI,RSSNR`. A76XX report offsets (RSRP = v − 140 dBm, RSRQ = (v − 40)/2 dB, RSSI
    = v − 110 dBm, RSSNR in dB); SIM7600 tenths of dBm/dB (cellular.md). Other systems: their
    name only."""
    out = {}
    f = v.split(",")
    if not f or not f[0]:
        return out
    out["act"] = f[0].strip()
    if out["act"] != "LTE" or len(f) < 14:
        return out
    band = f[6].strip()
    if band.startswith("EUTRAN-BAND"):
        out["band"] = "B" + band[11:]
    try:
        q, p, r, n = int(f[10]), int(f[11]), int(f[12]), int(f[13])
    except ValueError:
        return out
    if "SIM76" in (fw or ""):
        out["rsrq"], out["rsrp"], out["rssi_lte"], out["sinr"] = q // 10, p // 10, r // 10, n // 10
    else:
        out["rsrq"], out["rsrp"], out["rssi_lte"], out["sinr"] = (q - 40) // 2, p - 140, r - 110, n
    return out


def cops(v):
    """+COPS? (after the prefix) `mode,format,"name",AcT` → (name, AcT) or (None, None)."""
    f = v.split(",")
    if len(f) < 3:
        return None, None
    act = f[3].strip() if len(f) > 3 else ""
    return f[2].strip().strip('"'), int(act) if act.isdigit() else None


def csq_dbm(rssi):
    """+CSQ rssi → dBm (2·rssi − 113); None for 99 (unknown)."""
    if rssi == 99 or rssi < 0 or rssi > 31:
        return None
    return 2 * rssi - 113


class Modem:
    def __init__(self, hw, config, secrets=None, health=None):
        self.hw = hw
        self.cfg = config  # the "cellular" section of fl.config
        self._pin = (secrets or {}).get("sim_pin")
        self.health = health
        self.state = "off"
        self.at = None
        self.info = {}  # iccid, imei, imsi_plmn, operator, apn, rssi_dbm, reg, fw, act, band, rsrp...
        self.ident_gen = 0  # grows when identity/operator/APN/band change (a full heartbeat follows)
        self.resets = {"redial": 0, "cfun": 0, "pwrkey": 0, "reset": 0}
        self.dials = 0
        self.stopped = None  # why the modem was given up on (wrong PIN), else None
        self.progress = 0
        self._lost = False  # NO CARRIER / PDN deactivated while in data
        self._ready_seen = False
        self._task = None
        self._reader = None
        self.on_reset = None  # fn(rung_name): a modem reset happened (reported as an event)

    # --- status ---
    def data_up(self):
        return self.state == "data" and not self._lost and self.hw.data_up()

    def _fault(self, name, active, detail=""):
        if self.health is not None:
            self.health.set_fault(name, active, detail)

    def _count(self, name):
        if self.health is not None:
            self.health.count(name)

    def _ident(self, key, value):
        """Sets an identity field; a change makes the next heartbeat carry the full set."""
        if self.info.get(key) != value:
            self.info[key] = value
            self.ident_gen += 1

    def describe(self, full=True):
        """The modem's health for the heartbeat (fl.pathmgr.describe). The signal is read at
        each dial: while PPP owns the UART (the ESP32, no multiplexer) no AT command can go."""
        i = self.info
        d = {"dbm": i.get("rssi_dbm"), "reg": i.get("reg"), "state": self.state, "dials": self.dials}
        for k in ("rsrp", "rsrq", "sinr"):
            if i.get(k) is not None:
                d[k] = i[k]
        d["resets"] = self.resets
        if full:
            for k in ("op", "act", "band", "apn", "iccid", "imei", "fw"):
                d[k] = i.get(k)
        return d

    def start(self):
        if self._task is None:
            self._task = asyncio.create_task(self.run())

    # --- unsolicited codes ---
    def _urc(self, line):
        self.hw.urc(line)
        if line.startswith("*ATREADY") or line == "RDY":
            self._ready_seen = True
        elif line == "NO CARRIER" or line.startswith("+CGEV: NW PDN DEACT") or line.startswith("+CGEV: NW DETACH") \
                or line.startswith("+CGEV: ME PDN DEACT"):
            if self.state == "data":
                _log.warn("data session ended by the network: %s", line)
                self._lost = True
        elif line.startswith("UNDER-VOLTAGE"):
            self._count("modem_undervoltage")
            _log.warn("modem: %s (supply sags under transmit peaks?)", line)

    # --- the machine ---
    async def run(self):
        """Runs for the device's life; every failure ends in a pause and the next rung."""
        rung = 0
        failures = 0
        while True:
            self.progress += 1
            try:
                await self._climb(rung)
                failures = 0
                rung = 1
                await self._hold_data()
                _log.warn("data session lost: redialling")
            except Stop as e:
                self.stopped = str(e)
                self.state = "off"
                _log.error("modem given up until the config changes: %s", e)
                return
            except Step as e:
                failures += 1
                rung = max(e.rung, min(4, 1 + failures // 2))
                pause = BACKOFF_MS[min(failures - 1, len(BACKOFF_MS) - 1)]
                _log.warn("modem: %s; next: %s in %d ms", e, ("", "redial", "cfun", "pwrkey", "reset")[rung], pause)
                await asyncio.sleep_ms(pause)
            except Exception as e:  # noqa: BLE001 - a bug here costs the 4G path, never the device
                failures += 1
                rung = 3
                _log.error("modem: unexpected %r", e)
                await asyncio.sleep_ms(BACKOFF_MS[min(failures - 1, len(BACKOFF_MS) - 1)])

    async def _climb(self, rung):
        """From wherever the modem is to data; rung says how hard to shake it first."""
        if self.at is None:
            stream = self.hw.open()
            self.at = AT(stream, self._urc)
            self._reader = asyncio.create_task(self.at.run())
        if self.state == "data" or self._lost:
            await self._leave_data()
        if rung == 2:
            self.resets["cfun"] += 1
            self._reset_event("cfun")
            try:
                await self.at.cmd("AT+CFUN=0", 9000)
                await self.at.cmd("AT+CFUN=1", 9000)
            except ATError as e:
                raise Step("radio off/on failed: %s" % e, 3)
        elif rung >= 3:
            await self._power_cycle(rung)
        if not await self._answering(1000) and rung == 0:
            # After the ESP32 restarted, the module may still be in data mode: leave it.
            await self._leave_data()
        if not await self._answering(1000):
            if rung == 0:
                # Cold start: the module may be off. One PWRKEY press to switch it on.
                self.state = "booting"
                await self.hw.pulse("pwrkey", self.hw.pwrkey_on_ms)
            if not await self._wait_boot():
                self._fault(DEAD, True, "no answer to AT")
                raise Step("no answer to AT within %d ms" % BOOT_MS, 3 if rung < 3 else 4)
        self._fault(DEAD, False)
        self.state = "at_ready"
        await self._setup()
        await self._sim()
        self.state = "sim_ready"
        await self._identity()
        await self._register()
        self.state = "registered"
        await self._signal()
        await self._dial()
        self.state = "data"

    async def _power_cycle(self, rung):
        self.state = "booting"
        self._ready_seen = False
        if rung == 3:
            self.resets["pwrkey"] += 1
            self._reset_event("pwrkey")
            await self.hw.pulse("pwrkey", self.hw.pwrkey_off_ms)
            await asyncio.sleep_ms(POWER_GAP_MS)
            await self.hw.pulse("pwrkey", self.hw.pwrkey_on_ms)
        else:
            self.resets["reset"] += 1
            self._reset_event("reset")
            await self.hw.pulse("reset", self.hw.reset_ms)

    def _reset_event(self, how):
        self._count("modem_reset_" + how)
        _log.warn("modem reset: %s", how)
        if self.on_reset is not None:
            self.on_reset(how)

    async def _answering(self, timeout_ms):
        try:
            await self.at.cmd("AT", timeout_ms)
            return True
        except ATError:
            return False

    async def _wait_boot(self):
        deadline = ticks.after(BOOT_MS)
        while not ticks.due(deadline):
            self.progress += 1
            if await self._answering(1000):
                return True
            await asyncio.sleep_ms(200)
        return False

    async def _setup(self):
        try:
            await self.at.cmd("ATE0")
            await self.at.cmd("AT+CMEE=1")
            await self.at.cmd("AT+CGEREP=2,1")
        except ATError as e:
            raise Step("setup: %s" % e, 3)

    async def _sim(self):
        deadline = ticks.after(SIM_MS)
        tried_pin = False
        while True:
            self.progress += 1
            try:
                v = await self.at.query("AT+CPIN?", "+CPIN:")
            except ATTimeout as e:
                raise Step("SIM: %s" % e, 3)
            except ATError as e:
                v = None
                if e.cme == 10:
                    self._fault(SIM_FAULT, True, "SIM not inserted")
                    raise Step("SIM not inserted", 1)
                if e.cme not in (13, 14) or ticks.due(deadline):
                    self._fault(SIM_FAULT, True, "SIM failure (%s)" % e.text)
                    raise Step("SIM: %s" % e, 1)
            if v == "READY":
                self._fault(SIM_FAULT, False)
                return
            if v == "SIM PIN":
                if tried_pin or not self._pin:
                    why = "SIM PIN required and none configured" if not self._pin else "SIM PIN refused"
                    self._fault(SIM_FAULT, True, why)
                    raise Stop(why)
                tried_pin = True
                try:
                    await self.at.cmd("AT+CPIN=" + self._pin)
                except ATError as e:
                    # Never a second try: three wrong PINs lock the SIM for good (PUK).
                    self._fault(SIM_FAULT, True, "SIM PIN refused")
                    raise Stop("SIM PIN refused (%s)" % e.text)
                continue
            if v is not None and "PUK" in v:
                self._fault(SIM_FAULT, True, "SIM locked (PUK)")
                raise Stop("SIM locked: needs its PUK")
            if ticks.due(deadline):
                self._fault(SIM_FAULT, True, "SIM not ready (%s)" % v)
                raise Step("SIM not ready: %s" % v, 1)
            await asyncio.sleep_ms(1000)

    async def _identity(self):
        at = self.at
        try:
            self._ident("iccid", await at.query("AT+CICCID", "+ICCID:"))
            imei = await at.cmd("AT+CGSN")
            self._ident("imei", imei[0] if imei else None)
            try:
                fw = await at.query("AT+CGMR", "+CGMR:")
            except ATTimeout:
                raise
            except ATError:
                fw = None  # a module that does not say is still a module
            self._ident("fw", fw[:32] if fw else None)
            imsi = await at.cmd("AT+CIMI")
            self.info["imsi_plmn"] = imsi[0][:5] if imsi else None
            if self.cfg.get("lte_only", True):
                await at.cmd("AT+CNMP=38")
            apn, user, password, auth = self._apn()
            self._ident("apn", apn)
            _log.info("APN %s (%s)", apn, "configured" if self.cfg.get("apn") else "from the SIM's operator")
            await at.cmd('AT+CGDCONT=1,"IP","%s"' % apn)
            if auth != "none":
                # SIMCom order: cid, type, password, user.
                await at.cmd('AT+CGAUTH=1,%d,"%s","%s"' % (_AUTH[auth], password, user))
        except ATError as e:
            raise Step("identity/APN: %s" % e, 2)

    def _apn(self):
        c = self.cfg
        if c.get("apn"):
            return c["apn"], c.get("user", ""), c.get("password", ""), c.get("auth", "none")
        known = APNS.get(self.info.get("imsi_plmn") or "")
        if known is None:
            _log.warn("no APN configured and operator %s unknown: trying the network's default",
                      self.info.get("imsi_plmn"))
            return "", "", "", "none"
        return known

    async def _register(self):
        deadline = ticks.after(REG_MS)
        while True:
            self.progress += 1
            try:
                v = await self.at.query("AT+CEREG?", "+CEREG:")
            except ATError as e:
                raise Step("registration query: %s" % e, 3 if isinstance(e, ATTimeout) else 2)
            stat = -1
            if v:
                parts = v.split(",")
                if len(parts) >= 2 and parts[1].strip().isdigit():
                    stat = int(parts[1])
            self.info["reg"] = stat
            if stat in (1, 5):
                self._fault(NO_SERVICE, False)
                return
            if stat == 3:
                self._fault(NO_SERVICE, True, "registration denied")
                raise Step("registration denied", 2)
            if stat in (6, 7):
                self._fault(NO_SERVICE, True, "no data service (SMS only): APN or data plan?")
                raise Step("no data service", 2)
            if ticks.due(deadline):
                self._fault(NO_SERVICE, True, "not registered (stat %d)" % stat)
                raise Step("not registered within %d ms" % REG_MS, 2)
            await asyncio.sleep_ms(1000)

    async def _signal(self):
        try:
            v = await self.at.query("AT+CSQ", "+CSQ:")
            rssi = int(v.split(",")[0]) if v else 99
        except (ATError, ValueError):
            return
        dbm = csq_dbm(rssi)
        self.info["rssi_dbm"] = dbm
        if dbm is not None:
            self._fault(LOW_SIGNAL, dbm < LOW_SIGNAL_DBM, "%d dBm" % dbm)
        try:
            v = await self.at.query("AT+CPSI?", "+CPSI:")
            got = cpsi(v or "", self.info.get("fw"))
            for k in ("rsrp", "rsrq", "rssi_lte", "sinr"):
                self.info[k] = got.get(k)
            self._ident("act", got.get("act"))
            self._ident("band", got.get("band"))
        except ATError:
            pass
        try:
            op, _ = cops(await self.at.query("AT+COPS?", "+COPS:", COPS_MS) or "")
            self._ident("op", op)
        except ATError:
            pass

    async def _dial(self):
        self._lost = False
        self.dials += 1
        try:
            await self.at.cmd("ATD*99#", DIAL_MS)
        except ATError as e:
            raise Step("dial: %s" % e, 1 if e.code == "NO CARRIER" else 2)
        if self.hw.ppp_owns_uart:
            # PPP reads the UART from now on: this channel's reader must not take its bytes.
            self._reader.cancel()
            self._reader = None
        if not await self.hw.data_start(DATA_MS):
            raise Step("no data link after CONNECT", 2)
        _log.info("4G data up (APN %s, %s dBm)", self.info.get("apn"), self.info.get("rssi_dbm"))

    async def _hold_data(self):
        """Watches the data session until it is lost. (The UART belongs to PPP meanwhile: no
        AT commands until data mode is left.)"""
        while self.data_up():
            self.progress += 1
            await asyncio.sleep_ms(250)
        self.resets["redial"] += 1
        self._count("modem_data_lost")

    async def _leave_data(self):
        """PPP off (the hardware layer), the UART back to this channel, then the modem out of
        data mode: `+++` and ATH (both fail harmlessly if NO CARRIER already ended it)."""
        try:
            await self.hw.data_stop()
        except OSError as e:
            _log.warn("stopping PPP: %s", e)
        if self._reader is None:
            self._reader = asyncio.create_task(self.at.run())
        try:
            await self.at.escape()
        except ATError:
            pass
        try:
            await self.at.cmd("ATH", 2000)
        except ATError as e:
            _log.warn("leaving data mode: %s", e)
        self.state = "registered"
        self._lost = False


class CellPath(Path):
    """The 4G path: up while the modem's data session is; bring_up waits for the modem's own
    task (started on first use) to get there."""

    name = "cellular"
    fault_delay_ms = 180000

    def __init__(self, modem):
        super().__init__()
        self.modem = modem

    @property
    def ifname(self):
        # PPP names its interface once it is up (ESP32 `pp1`); the simulator has none.
        return self.modem.hw.ifname

    def is_up(self):
        return self.modem.data_up()

    async def bring_up(self, timeout_ms):
        self.modem.start()
        deadline = ticks.after(timeout_ms)
        while not ticks.due(deadline):
            if self.is_up():
                return True
            if self.modem.stopped:
                return False
            await asyncio.sleep_ms(250)
        return False

    def signal_dbm(self):
        return self.modem.info.get("rssi_dbm")

    def route(self, addr):
        return self.modem.hw.route(addr)

    def dns_servers(self):
        return self.modem.hw.dns_servers()
