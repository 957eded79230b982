"""FireLink firmware: watches a fire panel's outputs and delivers every alarm over MQTT."""
VERSION = "0.1.0"
