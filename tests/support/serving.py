"""Starting servers in tests: a free loopback port, and waiting until one answers."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_serving(
    url: str,
    process: subprocess.Popen[Any] | None = None,
    log: Path | None = None,
    seconds: float = 30,
) -> None:
    """Poll `url` until it answers 200; fail, with the log, if `process` exits or time
    runs out first."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except OSError:
            exited = process is not None and process.poll() is not None
            if exited or time.monotonic() > deadline:
                output = log.read_text() if log is not None else ""
                raise AssertionError(f"{url} not serving:\n{output}") from None
        time.sleep(0.1)
