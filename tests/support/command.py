"""The `aftercare` command, run as an operator runs it: a subprocess with an environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AFTERCARE = str(Path(sys.executable).with_name("aftercare"))


def aftercare(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `aftercare *args` with none of the caller's Twilio, database, booking, staff or
    keyword settings, only `env`."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "DATABASE_URL", "BOOKING_", "STAFF_", "KEYWORDS_"))
    }
    return subprocess.run(
        [AFTERCARE, *args],
        env={**clean, **(env or {})},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
