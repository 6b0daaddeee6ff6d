"""``python -m bench``: the built-in engine and HAProxy side by side (``make bench`` builds the
C tools first and runs this)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from bench.run import Settings, main

SCENARIOS = Settings().scenarios

parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
parser.add_argument("--duration", type=float, default=Settings.duration, help="seconds a run")
parser.add_argument("--rounds", type=int, default=Settings.rounds, help="at least 3")
parser.add_argument("--idle-conns", type=int, default=Settings.idle_conns)
parser.add_argument(
    "--scenarios",
    default=",".join(SCENARIOS),
    help=f"some of {','.join(SCENARIOS)} (all by default)",
)
parser.add_argument("--out", type=Path, default=Settings.out, help="where results are written")
parser.add_argument(
    "--no-profile",
    action="store_true",
    help="skip profiling the targets not met (which needs perf: apt-get install linux-perf)",
)
parser.add_argument(
    "--quick",
    action="store_true",
    help="for development: 1 s runs, 1,000 idle connections; the control plane up to 1,000 x 10",
)
args = parser.parse_args()
chosen = tuple(s for s in args.scenarios.split(",") if s)
unknown = [s for s in chosen if s not in SCENARIOS]
if unknown:
    parser.error(f"--scenarios: {', '.join(unknown)} unknown; choose from {', '.join(SCENARIOS)}")
if args.rounds < 3:
    parser.error("--rounds: at least 3, so that each ratio has a median and a spread")
settings = Settings(
    args.duration, args.rounds, args.idle_conns, chosen, args.out, profile=not args.no_profile
)
if args.quick:
    settings = dataclasses.replace(settings, duration=1.0, idle_conns=1000, quick=True)
sys.exit(main(settings))
