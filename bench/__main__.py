"""Benchmarks, run on demand (never in CI): `scripts/bench [suite ...] [options]`.

Each suite is a module of this package with `add_arguments(parser)` and
`run(args) -> rows`; with no suite named, all run. Figures are printed as a
table and reported in the README, never asserted.
"""

from __future__ import annotations

import argparse
import importlib
from types import ModuleType

from bench.support import Row, machine, print_table

SUITES = ("dispatch", "scale", "enrolment", "slow_twilio", "import_csv", "dashboard")


def main() -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="suite", help=f"any of {', '.join(SUITES)}")
    modules = {name: importlib.import_module(f"bench.{name}") for name in SUITES}
    for name, module in modules.items():
        module.add_arguments(parser.add_argument_group(name))
    args = parser.parse_args()
    unknown = set(args.suites) - set(SUITES)
    if unknown:
        parser.error(f"unknown suite {', '.join(sorted(unknown))}: choose from {', '.join(SUITES)}")
    print(machine(), flush=True)
    rows: list[Row] = []
    for name in args.suites or SUITES:
        suite: ModuleType = modules[name]
        print(f"\n[{name}] {(suite.__doc__ or '').strip().splitlines()[0]}", flush=True)
        found = suite.run(args)
        print_table(found)
        rows.extend(found)
    print("\nall figures")
    print_table(rows)


if __name__ == "__main__":
    main()
