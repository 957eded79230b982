"""A board and its definition: serial ports, the raw REPL, flashing, building and deploying the
application, the diagnostics console; the board and jig definition checks."""
