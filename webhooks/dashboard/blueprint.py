"""The dashboard's blueprint, which every page module adds its routes to."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint(
    "dashboard",
    "webhooks.dashboard",
    url_prefix="/staff",
    template_folder="templates",
    static_folder="static",
)
