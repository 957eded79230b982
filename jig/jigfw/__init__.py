# The FireLink test jig's firmware (issue 13): a second board that drives a device's inputs,
# power, EN and BOOT, and reads its LEDs and buzzer, one command per line on its serial port.
VERSION = "1.0.0"
