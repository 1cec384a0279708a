"""GET /api/openapi.json: the published description of the service's API (SPEC §12).

The document is data, `openapi.yaml` beside this module, served as JSON; no token is
needed to read it. The tests check the app's real answers against it.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

bp = Blueprint("openapi", __name__)
DOCUMENT = Path(__file__).with_name("openapi.yaml")


@cache
def document() -> dict[str, Any]:
    """The OpenAPI document, read once per process."""
    loaded: dict[str, Any] = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


@bp.get("/api/openapi.json")
def openapi() -> ResponseReturnValue:
    # Public and without credentials: any origin may read it (a browser's API viewer).
    return jsonify(document()), 200, {"Access-Control-Allow-Origin": "*"}
