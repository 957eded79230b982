# Runs before main.py on the ESP32. Kept empty on purpose: anything that can fail here would
# stop the board before the alarm path exists.
