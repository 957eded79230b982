# FireLink firmware entry point: picks the hardware layer, reads the config, builds the app and
# runs it (fl/boot.py: in that order, so that config validation never shares the heap with the app).
from fl.boot import main

main()
