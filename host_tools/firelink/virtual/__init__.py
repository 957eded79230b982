"""Virtual devices: the real firmware under the MicroPython unix port, its supervisor, its simulated world, modem and network paths."""
