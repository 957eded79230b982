# MQTT client figures against a real broker (MicroPython: unix port or a board whose network is up).
#
#   . broker env (FL_BROKER_HOST, FL_BROKER_PORT, FL_DEVICE_USER, FL_DEVICE_PASS; optional
#     FL_MONITOR_USER/FL_MONITOR_PASS for the subscriber latency, FL_BENCH_N, FL_BENCH_WINDOW;
#     FL_BENCH_TLS=1 with FL_BROKER_TLS_PORT, FL_CA_DER, FL_DEVICE_CERT_DER, FL_DEVICE_KEY_DER;
#     FL_BENCH_LEAN=1: only connect and N publishes, no latency lists, to find the smallest
#     `-X heapsize` that still works)
#   MICROPYPATH=/path/to/firmware:.frozen micropython /path/to/tests/bench/bench_mqtt.py
#
# Prints: heap the client holds once connected, N QoS 1 publishes of 150 bytes one after
# another (msgs/s, publish -> PUBACK p50/p99), the same with WINDOW in flight at once, and
# publish -> subscriber latency when monitor credentials are given.
import asyncio
import gc
import os
import time

from fl import log
from fl.link import LinkManager, Path

gc.collect()
_before_code = gc.mem_alloc()
from fl.mqtt import MQTTClient  # noqa: E402 (measured: the client's code in RAM)

gc.collect()
CODE_BYTES = gc.mem_alloc() - _before_code

N = int(os.getenv("FL_BENCH_N") or 1000)
WINDOW = int(os.getenv("FL_BENCH_WINDOW") or 8)
PAYLOAD = b"x" * 150
TOPIC = "firelink/%s/event" % (os.getenv("FL_DEVICE_ID") or "fl-test1")


class _Up(Path):
    """The network is already up (unix port, or a board after boot): one path that stays up."""
    name = "net"

    def is_up(self):
        return True

    async def bring_up(self, timeout_ms):
        return True


def pct(sorted_us, p):
    """Percentile of a sorted list of microseconds, in ms."""
    return sorted_us[min(len(sorted_us) - 1, len(sorted_us) * p // 100)] / 1000


def read(path):
    with open(path, "rb") as f:
        return f.read()


async def main():
    log.level = log.WARN
    host, port = os.getenv("FL_BROKER_HOST") or "127.0.0.1", int(os.getenv("FL_BROKER_PORT") or 1883)
    ssl_params = None
    if os.getenv("FL_BENCH_TLS"):
        port = int(os.getenv("FL_BROKER_TLS_PORT"))
        ssl_params = {"ca_der": read(os.getenv("FL_CA_DER")), "cert_der": read(os.getenv("FL_DEVICE_CERT_DER")),
                      "key_der": read(os.getenv("FL_DEVICE_KEY_DER")), "server_hostname": "localhost"}
    # Results go in lists of small ints made up front, so the bench's own data neither
    # fragments the heap nor counts as the client's.
    lat = None if os.getenv("FL_BENCH_LEAN") else [0] * N
    links = LinkManager([_Up()])
    gc.collect()
    base = gc.mem_alloc()
    c = MQTTClient(links, "bench-%d" % time.ticks_ms(), host, port, username=os.getenv("FL_DEVICE_USER"),
                   password=os.getenv("FL_DEVICE_PASS"), will=(TOPIC.replace("event", "status"), b"offline", True, 1),
                   ssl_params=ssl_params)
    gc.collect()
    idle = gc.mem_alloc() - base
    task = asyncio.create_task(c.run())
    if not await c.wait_connected(10000):
        print("not connected:", c.last_error)
        return
    gc.collect()
    connected = gc.mem_alloc() - base
    print("heap: code of fl.mqtt + fl.mqtt_rx + fl.mqtt_codec %d B; client built %d B; after connect%s %d B (incl. its tasks); "
          "code + client %d B; free %d B" % (CODE_BYTES, idle, " with TLS" if ssl_params else "", connected,
                                             CODE_BYTES + connected, gc.mem_free()))

    if os.getenv("FL_BENCH_LEAN"):
        for i in range(N):
            if not await c.publish(TOPIC, PAYLOAD):
                print("publish failed:", c.last_error)
                return
        print("lean: %d QoS 1 publishes done" % N)
        return

    t0 = time.ticks_ms()
    for i in range(N):
        t = time.ticks_us()
        if not await c.publish(TOPIC, PAYLOAD):
            print("publish failed:", c.last_error)
            return
        lat[i] = time.ticks_diff(time.ticks_us(), t)
    el = time.ticks_diff(time.ticks_ms(), t0)
    gc.collect()
    after = gc.mem_alloc() - base
    lat.sort()
    print("sequential: %d QoS 1 msgs in %d ms = %d msgs/s; publish->PUBACK p50 %.2f ms p99 %.2f ms max %.2f ms; "
          "client heap after %d B" % (N, el, N * 1000 // max(1, el), pct(lat, 50), pct(lat, 99), lat[-1] / 1000,
                                      after))

    async def worker(k):
        for _ in range(k):
            await c.publish(TOPIC, PAYLOAD)

    t0 = time.ticks_ms()
    await asyncio.gather(*[worker(N // WINDOW) for _ in range(WINDOW)])
    el = time.ticks_diff(time.ticks_ms(), t0)
    n = N // WINDOW * WINDOW
    print("windowed: %d msgs with %d in flight in %d ms = %d msgs/s" % (n, WINDOW, el, n * 1000 // max(1, el)))

    if os.getenv("FL_MONITOR_USER"):
        m = min(N, 500)
        sent = [0] * m
        got = []

        def on_message(topic, payload):
            i = int(payload[:6])
            if payload[6:] == PAYLOAD and i < m and sent[i]:
                got.append(time.ticks_diff(time.ticks_us(), sent[i]))
                sent[i] = 0

        mon = MQTTClient(links, "bench-mon-%d" % time.ticks_ms(), host, int(os.getenv("FL_BROKER_PORT")), username=os.getenv("FL_MONITOR_USER"),
                         password=os.getenv("FL_MONITOR_PASS"), subscriptions=[(TOPIC, 1)], on_message=on_message)
        mtask = asyncio.create_task(mon.run())
        await mon.wait_connected(10000)
        for i in range(m):
            p = b"%06d" % i + PAYLOAD
            sent[i] = time.ticks_us()
            await c.publish(TOPIC, p)
        deadline = time.ticks_add(time.ticks_ms(), 5000)
        while len(got) < m and time.ticks_diff(deadline, time.ticks_ms()) > 0:
            await asyncio.sleep_ms(20)
        got.sort()
        if got:
            print("publish->subscriber: %d msgs, p50 %.2f ms p99 %.2f ms" % (len(got), pct(got, 50), pct(got, 99)))
        await mon.disconnect()
        mtask.cancel()
    print("counters:", c.stats())
    await c.disconnect()
    task.cancel()


asyncio.run(main())
