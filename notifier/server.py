"""The embedded service for `aftercare run`: gunicorn with one threaded worker
process that serves the web app and runs the dispatcher beside it.

Everything is built inside the worker after gunicorn forks, so no thread, lock or
database connection crosses a fork, and a restarted worker brings both back.
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger

from notifier.privacy import mask_handlers
from notifier.settings import Settings
from notifier.store.db import make_engine
from notifier.worker import dispatching_in_background, single_worker_lock
from webhooks.app import create_app


class MaskingLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger with the masking filter on its error and access log handlers,
    in the arbiter as in the worker, and again after a reload sets them up anew."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        mask_handlers([*self.error_log.handlers, *self.access_log.handlers])


class _Embedded(BaseApplication):  # type: ignore[misc]
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        self.resources = ExitStack()
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)
        self.cfg.set("logger_class", MaskingLogger)
        self.cfg.set("post_worker_init", self._start_dispatcher)
        self.cfg.set("worker_exit", self._stop_dispatcher)

    def load(self) -> Any:
        return create_app(self.settings)

    def _start_dispatcher(self, _worker: Any) -> None:
        self.resources.enter_context(single_worker_lock(self.settings.database_url))
        engine = make_engine(self.settings.database_url)
        self.resources.enter_context(dispatching_in_background(self.settings, engine))

    def _stop_dispatcher(self, _server: Any, _worker: Any) -> None:
        self.resources.close()


def serve(settings: Settings, host: str, port: int) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    _Embedded(
        settings,
        {
            "bind": f"{host}:{port}",
            "workers": 1,
            "worker_class": "gthread",
            "threads": 8,
            "timeout": 60,
            "accesslog": "-",
        },
    ).run()
