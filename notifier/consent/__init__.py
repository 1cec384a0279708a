"""Consent and privacy: STOP/START/HELP, the consent log, erasure, retention."""
