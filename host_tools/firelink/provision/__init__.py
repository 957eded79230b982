"""Provisioning: a flashed board on a USB cable -> a commissioned transmitter, its settings and its report."""
