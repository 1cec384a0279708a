"""What every benchmark shares: fresh databases, the loopback fake Twilio, settings,
process sampling, and the printed table."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy.engine import make_url

from notifier.settings import Settings, TwilioSettings
from notifier.store import migrate
from tests.support.postgres import admin_connection

ROOT = Path(__file__).resolve().parent.parent
SID, TOKEN = "AC" + "0123456789abcdef" * 2, "fake-twilio-auth-token-0123456789"
POSTGRES = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")

Row = tuple[str, str]


def machine() -> str:
    return (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {platform.platform()}"
    )


def print_table(rows: Sequence[Row]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value:>16}", flush=True)


@dataclass(frozen=True)
class Fake:
    base_url: str
    pids: tuple[int, ...]


@contextmanager
def fake_twilio(latency: float, processes: int = 1) -> Iterator[Fake]:
    """The loopback fake Twilio: `processes` processes sharing one port (SO_REUSEPORT),
    so the fake is not what limits a benchmark."""
    command = [sys.executable, "-m", "tests.support.fake_twilio", "--latency", str(latency)]
    command += ["--no-validate", "--reuse-port"]
    fakes: list[subprocess.Popen[str]] = []
    try:
        port = "0"
        for _ in range(processes):
            fake = subprocess.Popen(
                [*command, "--port", port], cwd=ROOT, stdout=subprocess.PIPE, text=True
            )
            fakes.append(fake)
            assert fake.stdout is not None
            base_url = fake.stdout.readline().split()[-1]
            port = base_url.rsplit(":", 1)[1]
        yield Fake(base_url, tuple(f.pid for f in fakes))
    finally:
        for fake in fakes:
            fake.terminate()
        for fake in fakes:
            fake.communicate(timeout=10)


@contextmanager
def fresh_database(kind: str) -> Iterator[str]:
    """A migrated, empty database of `kind` (sqlite or postgres), dropped afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            url = f"sqlite:///{directory}/bench.sqlite3"
            migrate.upgrade(url)
            yield url
        return
    if kind != "postgres":
        raise SystemExit(f"unknown database {kind!r}: use sqlite or postgres")
    name = f"aftercare_bench_{uuid.uuid4().hex[:8]}"
    admin(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def admin(statement: str) -> None:
    """Run one statement on the PostgreSQL server's maintenance database."""
    with admin_connection(POSTGRES) as connection:
        connection.execute(statement)


def cpu_seconds(pid: int) -> float:
    """User and system CPU a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM, Linux /proc), in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]) / 1024


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, over all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle and iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


def worker_env(url: str, base_url: str, **dispatch: str) -> dict[str, str]:
    """The environment of an `aftercare worker` on `url`, sending to the Twilio at
    `base_url`: this shell's own Twilio, dispatch and database variables left out,
    `dispatch` given as DISPATCH_<NAME> variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("TWILIO_", "DISPATCH_", "DATABASE_", "WHATSAPP_"))
    }
    env.update(
        DATABASE_URL=url,
        TWILIO_ACCOUNT_SID=SID,
        TWILIO_AUTH_TOKEN=TOKEN,
        TWILIO_SMS_FROM="+14155550100",
        TWILIO_API_BASE_URL=base_url,
        PUBLIC_BASE_URL="https://aftercare.example.org",
    )
    env.update({f"DISPATCH_{name.upper()}": value for name, value in dispatch.items()})
    return env


def twilio_settings(base_url: str) -> TwilioSettings:
    return TwilioSettings(
        account_sid=SID,
        auth_token=TOKEN,
        sms_from="+14155550100",
        messaging_service_sid=None,
        whatsapp_from=None,
        api_base_url=base_url,
        timeout_seconds=10,
    )


def settings_for(url: str, base_url: str, concurrency: int) -> Settings:
    return replace(
        Settings(database_url=url, twilio=twilio_settings(base_url)),
        dispatch_concurrency=concurrency,
        dispatch_batch_size=max(200, concurrency),
    )


@contextmanager
def gunicorn(
    env: dict[str, str], options: Sequence[str], log: Path, port: int | None = None
) -> Iterator[str]:
    """gunicorn serving `notifier:create_app()` (the web app alone, as the Procfile's
    `web` line) on loopback with `env` over this shell's environment less its Twilio
    settings; its base URL once /healthz answers."""
    port = port or free_port()
    server_env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TWILIO_", "WEB_CONCURRENCY"))
    }
    server_env.update(env)
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}"]
    command += ["--access-logfile", "-", *options, "notifier:create_app()"]
    with log.open("wb") as output:
        server = subprocess.Popen(command, cwd=ROOT, env=server_env, stdout=output, stderr=output)
    base_url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(server, base_url, log)
        yield base_url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_ready(server: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            tail = log.read_text(errors="replace").splitlines()[-10:]
            raise SystemExit("gunicorn did not start:\n" + "\n".join(tail))
        try:
            with urllib.request.urlopen(f"{base_url}/healthz", timeout=2) as answer:  # noqa: S310
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise SystemExit("gunicorn did not answer /healthz within 60 s")
