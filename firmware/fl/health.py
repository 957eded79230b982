"""Health registry: every module reports faults and counters the same way.

Faults are conditions that are on or off (`set_fault`); counters only grow (`count`).
The heartbeat publishes both; listeners hear fault changes so they can raise events or
light the fault LED.
"""


class Health:
    def __init__(self):
        self.counters = {}
        self.faults = {}  # name -> detail string, for active faults only
        self._listeners = []

    def count(self, name, n=1):
        self.counters[name] = self.counters.get(name, 0) + n

    def listen(self, fn):
        """fn(name, active, detail) on every change of a fault."""
        self._listeners.append(fn)

    def set_fault(self, name, active, detail=""):
        """Returns True when this changed the fault's state."""
        if active:
            if name in self.faults and self.faults[name] == detail:
                return False
            was = name in self.faults
            self.faults[name] = detail
            if not was:
                self.count("fault_" + name)
            for fn in self._listeners:
                fn(name, True, detail)
            return True
        if name not in self.faults:
            return False
        del self.faults[name]
        for fn in self._listeners:
            fn(name, False, "")
        return True

    def any_fault(self):
        return bool(self.faults)
