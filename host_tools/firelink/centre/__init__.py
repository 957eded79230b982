"""The monitoring centre: intake, store, device book and views; what the centre sees of a device, and remote commands to it."""
