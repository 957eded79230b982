"""Provisioning: a flashed board on a USB cable -> a commissioned transmitter; the installer's
settings, the board's side and the commissioning report."""
