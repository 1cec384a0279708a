"""Aftercare Notifier: texts clinic patients their aftercare instructions on time."""

from notifier.app import create_app

__all__ = ["create_app"]
