"""Finds where a JSON text first breaks the grammar, so a config error can name its line.

MicroPython's json.loads says only "syntax error in JSON", and it accepts some text that
is not JSON (a missing comma or colon, a trailing comma). This strict scanner names the line
and the reason: `line 7: expected "," or "}"`. It works on bytes (indexing a non-ASCII str
is O(n) in MicroPython) and its reasons never quote the text, so it is safe on secrets.json.
"""

_WS = b" \t\r\n"
_ESCAPES = b'"\\/bfnrtu'
_HEX = b"0123456789abcdefABCDEF"
_DIGITS = b"0123456789"


class _Bad(Exception):
    pass


def first_error(data):
    """(line, reason) of the first syntax error in `data` (bytes), or None if strict JSON
    accepts it (MicroPython can also fail on limits such as nesting depth)."""
    s = _Scanner(data)
    try:
        s.value()
        if s.peek() >= 0:
            s.fail("unexpected text after the end of the document")
        return None
    except _Bad as e:
        return data.count(b"\n", 0, s.i) + 1, e.args[0]
    except RuntimeError:  # recursion too deep: nothing useful to point at
        return None


class _Scanner:
    def __init__(self, data):
        self.b = data
        self.i = 0
        self.n = len(data)

    def fail(self, why):
        raise _Bad("unexpected end of file" if self.i >= self.n else why)

    def peek(self):
        b, i, n = self.b, self.i, self.n
        while i < n and b[i] in _WS:
            i += 1
        self.i = i
        return b[i] if i < n else -1

    def value(self):
        c = self.peek()
        if c == 0x7B:  # {
            self.container(0x7D, True)
        elif c == 0x5B:  # [
            self.container(0x5D, False)
        elif c == 0x22:  # "
            self.string()
        elif c == 0x2D or 0x30 <= c <= 0x39:
            self.number()
        else:
            for word in (b"true", b"false", b"null"):
                if self.b[self.i:self.i + len(word)] == word:
                    self.i += len(word)
                    return
            self.fail("strings need double quotes" if c == 0x27 else "expected a value")

    def container(self, close, is_object):
        self.i += 1
        if self.peek() == close:
            self.i += 1
            return
        while True:
            if is_object:
                c = self.peek()
                if c != 0x22:
                    self.fail("strings need double quotes" if c == 0x27 else "expected a key in double quotes")
                self.string()
                if self.peek() != 0x3A:
                    self.fail('expected ":" after the key')
                self.i += 1
            self.value()
            c = self.peek()
            if c == close:
                self.i += 1
                return
            if c != 0x2C:
                self.fail('expected "," or "%s"' % chr(close))
            self.i += 1
            if self.peek() == close:
                self.fail('extra "," before "%s"' % chr(close))

    def string(self):
        b, n = self.b, self.n
        i = self.i + 1
        while i < n:
            c = b[i]
            if c == 0x22:
                self.i = i + 1
                return
            if c == 0x5C:  # backslash
                i += 1
                if i >= n or b[i] not in _ESCAPES:
                    self.i = i
                    self.fail("unknown escape after a backslash (a backslash itself is written \\\\)")
                if b[i] == 0x75:  # \uXXXX
                    for k in range(1, 5):
                        if i + k >= n or b[i + k] not in _HEX:
                            self.i = i
                            self.fail("\\u needs four hex digits")
                    i += 4
            elif c < 0x20:
                self.i = i
                self.fail("string not closed before the end of the line" if c == 0x0A
                          else "control character inside a string")
            i += 1
        self.i = i
        self.fail("string not closed")

    def number(self):
        b, n = self.b, self.n
        i = self.i
        if b[i] == 0x2D:
            i += 1
        if i < n and b[i] == 0x30:
            i += 1
            if i < n and b[i] in _DIGITS:
                self.i = i
                self.fail("numbers do not start with 0")
        else:
            i = self._digits(i)
        if i < n and b[i] == 0x2E:  # .
            i = self._digits(i + 1)
        if i < n and b[i] in b"eE":
            i += 1
            if i < n and b[i] in b"+-":
                i += 1
            i = self._digits(i)
        self.i = i

    def _digits(self, i):
        start = i
        while i < self.n and self.b[i] in _DIGITS:
            i += 1
        if i == start:
            self.i = i
            self.fail("expected a digit")
        return i
