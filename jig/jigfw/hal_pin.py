"""The jig's hardware on a MicroPython board (a Raspberry Pi Pico by default): the only module
importing `machine`. Every pin is made once, at start, at level 0 (every switch off), so the
jig allocates nothing per command and never glitches a relay on while setting a pin up."""
from machine import ADC, Pin

ADC_FULL_MV = 3300


class PinHal:
    def __init__(self, wiring):
        self._out = {}
        self._in = {}
        self._adc = {}
        if wiring is None:
            return
        outs = list(wiring.contacts.values())
        for net in wiring.eol.values():
            outs += [net["connect"], net["alarm"], net["short"]]
        for line in (wiring.power, wiring.en, wiring.boot):
            if line is not None:
                outs.append(line["pin"])
        for pin in outs:
            self._out[pin] = Pin(pin, Pin.OUT, value=0)
        for pin in wiring.sense.values():
            self._in[pin] = Pin(pin, Pin.IN, Pin.PULL_DOWN)  # an unpowered device reads 0
        if wiring.rail is not None:
            self._adc[wiring.rail] = ADC(Pin(wiring.rail))

    def write(self, pin, level):
        self._out[pin].value(level)

    def read(self, pin):
        return self._in[pin].value()

    def read_mv(self, pin):
        return self._adc[pin].read_u16() * ADC_FULL_MV // 65535

    def commit(self):
        pass  # every write took effect at once
