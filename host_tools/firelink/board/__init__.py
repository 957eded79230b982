"""A board and its definition: serial ports, the raw REPL, flashing, building and deploying the
application (and, for a board with ROMFS, its image), the diagnostics console; the board and jig
definition checks."""
