"""The site: its MQTT broker (mosquitto), certificate authority and inventory of provisioned
devices; a whole site on this PC (broker, monitor, virtual device) and the demo on it."""
