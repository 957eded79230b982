# MicroPython script (tests/bench/bench_heap.py runs it in a virtual device's directory, the shipped
# build on MICROPYPATH): what each module costs the heap to import, in bytes that stay allocated
# after a collection. $FL_MODULES: the modules, dependencies first, comma-separated, so that each
# figure is the module's own (its bytecode, constants, functions and classes, and the names it
# interns). Not in argv: the unix port interns each argument, and one of 255 bytes or more aborts it.
import gc
import os

import micropython

order = os.getenv("FL_MODULES").split(",")
gc.collect()
start = prev = gc.mem_alloc()
for name in order:
    __import__(name)
    gc.collect()
    now = gc.mem_alloc()
    print("module %s %d" % (name, now - prev))
    micropython.qstr_info()  # the names it interned: part of the figure above
    prev = now
print("total %d" % (prev - start))
micropython.qstr_info()
