"""The hardware layer: one interface, chosen once at boot by platform.

A board object offers (see sim.py for the reference implementation):
  name                                  "esp32" | "sim"
  board_info() -> dict                  board.json as deployed on the device (firelink.board.boards)
  release_info()                        boot is over: drop the parsed board.json (heap)
  unique_id() -> bytes                  6-byte MAC
  reset_cause() -> str                  power_on | watchdog | brownout | software | hard | deepsleep | unknown
  digital_input(channel) -> obj         .value() -> raw level 0/1 (pull-up: contact closed reads 0)
  analog_input(channel) -> obj          .read_raw() -> 0..4095, .read_mv() -> millivolts at the pin
  wait_inputs(timeout_ms) -> awaitable  returns early when an input may have changed (IRQ / control
                                        file); allocates nothing per call (fl/edgewait.py)
  on_mains(present)                     mains state: Wi-Fi power save off on mains, on on battery
  output(name, on)                      led_status, led_fault, buzzer
  watchdog(timeout_ms) -> obj           .feed()
  relax_watchdog()                      long timeout once the app has stopped for the REPL
  clock_synced() -> bool, async sync_clock(path, servers, timeout_ms) -> bool   SNTP via fl.sntp, sets the RTC
  paths(config) -> [fl.link.Path]       network paths in priority order
  storage_free() -> int                 bytes free on the filesystem
  free_heap() -> int
  reset(cause)                          restart the device
Portable modules import only this package, never machine/network/esp32.
"""
import sys


def load():
    if sys.platform == "esp32":
        from fl.hal.esp32 import Board
    else:
        from fl.hal.sim import Board
    return Board()
