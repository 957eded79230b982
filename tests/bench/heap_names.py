# MicroPython script (tests/bench/bench_heap.py runs it in a virtual device's directory, the shipped
# build on MICROPYPATH): MicroPython's name table once the app is built the way fl.boot builds it,
# then again after importing the modules the app loads later (fl.boot.LATER), whose names boot
# interned already: the two must be equal (a late name could grow the table by a large block).
import micropython

from fl import boot

board, loaded = boot.start()
from fl.app import App  # noqa: E402 - after boot, as fl.boot.main imports it

App(board, loaded=loaded)
micropython.qstr_info()
for name in boot.LATER:
    __import__(name)
micropython.qstr_info()
