"""Booking events applied: a treatment completed, cancelled, a patient changed."""
