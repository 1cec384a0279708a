"""Delivery: claiming due rows, routing, sending through Twilio, recording outcomes."""
