"""The doorways: Flask blueprints for the booking system, Twilio and clinic staff."""
