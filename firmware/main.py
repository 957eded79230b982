# FireLink firmware entry point: picks the hardware layer, builds the app and runs it.
from fl.app import main

main()
