"""Virtual devices: the real firmware under the MicroPython unix port, its supervisor, its
simulated world (inputs, links, modem, network paths)."""
