"""Cost at scale: a dispatch pass with nothing due, and worker memory, over many stored rows."""

from __future__ import annotations

import argparse

from bench.support import Row


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--future", default="10000,100000,1000000", help="future rows stored")


def run(args: argparse.Namespace) -> list[Row]:
    raise SystemExit("scale suite: not written yet")
