# Repeated boots that never get healthy lead to safe mode; one healthy run clears the count.
from fwtest import eq, ok, write

from fl.bootguard import BootGuard


def test_safe_mode_after_repeated_unhealthy_boots():
    results = [BootGuard(safe_after=3).begin() for _ in range(5)]
    eq(results, [False, False, False, True, True], "safe mode per boot")


def test_healthy_run_resets_the_count():
    for _ in range(3):
        BootGuard(safe_after=3).begin()
    g = BootGuard(safe_after=3)
    ok(g.begin(), "fourth unhealthy boot is safe mode")
    g.healthy()
    eq(BootGuard(safe_after=3).begin(), False, "next boot after a healthy run")


def test_corrupt_counter_is_a_fresh_start_not_a_safe_mode_loop():
    write("boot.dat", b"\xff\xff\xff\xff\xff\xff")
    g = BootGuard(safe_after=1)
    eq(g.begin(), False, "safe mode")
    eq(g.failed_boots, 0, "failed boots read from a corrupt file")
    write("boot.dat", b"\x07")
    eq(BootGuard(safe_after=1).begin(), False, "truncated file")
