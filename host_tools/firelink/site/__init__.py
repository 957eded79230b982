"""The site: its MQTT broker (mosquitto), certificate authority, inventory of provisioned devices, and a whole site on this PC."""
