"""Import: `aftercare import` of a clinic's past year, 10,000 treatments in one CSV file.

The real command, a subprocess as an operator runs it (start-up, migrations check
and plan loading included), on a fresh migrated database. The file is what a clinic
exports: treatments spread over the past year (every step but the yearly check-up
already past, so most messages are stored `expired`), a fifth of the patients with
a second, later session (which supersedes the first), English, Arabic and Russian,
SMS and WhatsApp, some national-format numbers. Reported per database: the first
run (rows/s and messages written), a dry run and a second run of the same file
(which adds nothing), and whether the rows stored match the file.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import text

from bench.support import Row, fresh_database
from notifier.store.db import make_engine

AFTERCARE = str(Path(sys.executable).with_name("aftercare"))
COLUMNS = (
    "patient_id,first_name,phone,channel,language,timezone,consent,treatment_id,kind,performed_at"
)
LANGUAGES = (("en", "Asia/Dubai"), ("ar", "Asia/Riyadh"), ("ru", "Europe/Moscow"))


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--import-rows", type=int, default=10_000, help="treatments in the file")
    group.add_argument("--import-databases", default="sqlite,postgres")


def run(args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "patients.csv"
        write_file(path, args.import_rows)
        size = path.stat().st_size / 1024 / 1024
        print(f"file: {args.import_rows:,} rows, {size:.1f} MiB")
        for database in args.import_databases.split(","):
            with fresh_database(database) as url:
                rows += measure(database, url, path, args.import_rows)
    return rows


def measure(database: str, url: str, path: Path, count: int) -> list[Row]:
    name = f"import {count:,} rows, {database}"
    dry, dry_seconds = aftercare(url, path, "--dry-run")
    first, seconds = aftercare(url, path)
    second, again_seconds = aftercare(url, path)
    treatments, messages = stored(url)
    check = "ok" if treatments == count else f"MISMATCH {treatments:,} treatments"
    return (
        [
            (f"{name}: first run", f"{seconds:,.1f} s"),
            (f"{name}: rows/s", f"{count / seconds:,.0f}/s"),
            (f"{name}: messages written", f"{messages:,}"),
            (f"{name}: dry run", f"{dry_seconds:,.1f} s"),
            (f"{name}: second run (adds nothing)", f"{again_seconds:,.1f} s"),
            (f"{name}: treatments stored vs rows", check),
            (f"{name}: second run says", _summary(second)),
        ]
        + ([] if "would import" in dry else [(f"{name}: dry run FAILED", "!")])
        + ([] if "imported" in first else [(f"{name}: first run FAILED", "!")])
    )


def aftercare(url: str, path: Path, *options: str) -> tuple[str, float]:
    """Run `aftercare import`; its output and the wall-clock seconds it took."""
    start = time.perf_counter()
    done = subprocess.run(
        [AFTERCARE, "import", str(path), *options],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"import suite: aftercare import failed:\n{done.stdout}{done.stderr}")
    return done.stdout, seconds


def _summary(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("import: nothing new")]
    return "nothing new" if lines else "ADDED SOMETHING"


def stored(url: str) -> tuple[int, int]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            treatments = connection.execute(text("SELECT count(*) FROM treatment")).scalar_one()
            messages = connection.execute(text("SELECT count(*) FROM message")).scalar_one()
    finally:
        engine.dispose()
    return int(treatments), int(messages)


def write_file(path: Path, count: int) -> None:
    """`count` treatments over the past year; every fifth patient has a later session."""
    now = datetime.now(UTC).replace(microsecond=0)
    lines = [COLUMNS]
    patient, first_days = 0, 0
    for n in range(count):
        second_session = n % 5 == 4 and first_days > 1
        if second_session:
            days = first_days // 2  # a touch-up, later than the first session
        else:
            patient += 1
            days = first_days = (n * 7919) % 360 + 2
        language, timezone = LANGUAGES[patient % 3]
        channel = "whatsapp" if patient % 4 == 0 else "sms"
        phone = f"050{patient:07d}" if patient % 7 == 0 else f"+97150{patient:07d}"
        performed_at = now - timedelta(days=days, hours=n % 9)
        lines.append(
            f"P-{patient},Name{patient},{phone},{channel},{language},{timezone},true,"
            f"T-{n},scalp_micropigmentation,{performed_at.isoformat()}"
        )
    path.write_text("\n".join(lines) + "\n")
