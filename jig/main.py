# FireLink test jig: serves the line protocol on the USB serial port (jigfw/serve.py).
from jigfw import serve

serve.main()
