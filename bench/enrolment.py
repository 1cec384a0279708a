"""Enrolment webhook under load: gunicorn, signed treatment.completed events, wrk."""

from __future__ import annotations

import argparse

from bench.support import Row


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--enrolment-seconds", type=int, default=20, help="seconds of load")


def run(args: argparse.Namespace) -> list[Row]:
    raise SystemExit("enrolment suite: not written yet")
