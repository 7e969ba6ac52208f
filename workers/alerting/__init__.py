"""Alert targets and rules: Standard Webhooks signing, MQTT publishing (Frigate-style
topics, incidents with new/update/end), and the rules of an alerts config file."""
