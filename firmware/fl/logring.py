"""The last log lines in RAM, for the diagnostics console (`log`) and the support report.

Preallocated at boot (LINES fixed buffers of WIDTH bytes, in a ring) so that keeping a line
costs a copy, never a heap block: log lines are printed from every task, a full heap included.
A line longer than WIDTH is cut; the ring forgets the oldest line first.
"""
LINES = 16
WIDTH = 112


class LogRing:
    def __init__(self, lines=LINES, width=WIDTH):
        self._bufs = [bytearray(width) for _ in range(lines)]
        self._lens = bytearray(lines)  # width < 256
        self._next = 0
        self._count = 0
        self.width = width
        self.seen = 0  # lines ever kept

    def add(self, line):
        """fl.log's tap: keeps the line (a str)."""
        i = self._next
        buf = self._bufs[i]
        n = 0
        w = self.width
        for ch in line:  # no encode(): a str's bytes copied as they come, without a new block
            o = ord(ch)
            if n >= w:
                break
            buf[n] = o if o < 128 else 63  # "?" for what is not ASCII
            n += 1
        self._lens[i] = n
        self._next = (i + 1) % len(self._bufs)
        if self._count < len(self._bufs):
            self._count += 1
        self.seen += 1

    def last(self, n):
        """The last n lines (str), oldest first."""
        n = max(0, min(n, self._count))
        size = len(self._bufs)
        out = []
        for k in range(n):
            i = (self._next - n + k) % size
            out.append(bytes(self._bufs[i][:self._lens[i]]).decode())
        return out
