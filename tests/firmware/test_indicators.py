# Local indications follow the connection and the faults; the buzzer chirps until silenced.
import asyncio
import json
import time

from fwtest import eq, ok
from mqtt_peers import until

from fl.hal.sim import OUTPUTS, Board
from fl.health import Health
from fl.indicators import Indicators


class Link:
    connected = True


def outputs():
    with open(OUTPUTS) as f:
        return json.load(f)


async def test_leds_follow_connection_and_faults_and_buzzer_chirps_until_silenced():
    board = Board()
    health = Health()
    chirps = []
    real_output = board.output

    def output(name, on):
        if name == "buzzer" and on:
            chirps.append(1)
        real_output(name, on)

    board.output = output
    ind = Indicators(board, health, Link(), chirp_every_ms=1000, chirp_ms=20)
    task = asyncio.create_task(ind.run())
    await asyncio.sleep_ms(600)
    eq(outputs()["led_status"], True, "status LED steady while connected")
    eq(outputs()["led_fault"], False, "fault LED off")
    eq(chirps, [], "no chirp without a fault")
    health.set_fault("mains", True, "lost")
    t = time.ticks_ms()
    ok(await until(lambda: len(chirps) >= 2, 5000), "chirps while faulty: %d" % len(chirps))
    ok(outputs()["led_fault"], "fault LED on")
    # every second: two chirps take at least one interval (never sooner)
    ok(time.ticks_diff(time.ticks_ms(), t) >= 900, "chirps a second apart")
    ind.silence()
    n = len(chirps)
    await asyncio.sleep_ms(1600)
    eq(len(chirps), n, "silenced")
    health.set_fault("battery", True, "low")
    ok(await until(lambda: len(chirps) > n, 3000), "a new fault re-arms the buzzer")
    task.cancel()


def test_silence_lasts_until_a_new_fault_not_a_new_detail_of_a_known_one():
    health = Health()
    ind = Indicators(Board(), health, Link())
    health.set_fault("broker_unreachable", True, "connect timeout")
    ind.silence()
    health.set_fault("broker_unreachable", True, "ECONNREFUSED")  # the same fault, its last error changed
    ok(ind.silenced, "a new detail of a fault already silenced does not sound again")
    health.set_fault("mains", True, "lost")
    ok(not ind.silenced, "a new fault sounds again")
    ind.silence()
    health.set_fault("mains", False)
    ok(ind.silenced, "a fault clearing keeps the silence")
    health.set_fault("mains", True, "lost")
    ok(not ind.silenced, "the same fault coming back is a new fault")
