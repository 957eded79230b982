"""The monitoring centre: intake, store, device book and views; what the centre sees of one
device, and remote commands to it."""
