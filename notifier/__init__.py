"""Aftercare Notifier: texts clinic patients their aftercare instructions on time.

`notifier:create_app` (the app factory gunicorn and `flask --app notifier` find) is
imported on first use, so the pure modules (`notifier.planning.schedule`, `notifier.replies.triage`)
import without Flask.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webhooks.app import create_app

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from webhooks.app import create_app

        return create_app
    raise AttributeError(f"module 'notifier' has no attribute {name!r}")
