"""``python -m balancer.lab``: run simulated PSM servers until stopped."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path

from balancer.lab.process import default_specs, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="balancer lab", description="Run simulated PSM servers until stopped."
    )
    parser.add_argument("--servers", type=int, default=2, help="how many (default: 2)")
    parser.add_argument(
        "--dir", type=Path, required=True, help="for the control socket, pid file, certificates"
    )
    parser.add_argument(
        "--ports",
        choices=["auto", "privileged", "unprivileged", "ephemeral"],
        default="auto",
        help="3389 and 443, 13389 and 10443, or any free ports; auto: 3389/443 for root",
    )
    args = parser.parse_args(argv)
    privileged = args.ports == "privileged" or (args.ports == "auto" and os.geteuid() == 0)
    try:
        specs = default_specs(args.servers, privileged)
    except ValueError as error:
        parser.error(str(error))
    if args.ports == "ephemeral":
        specs = [dataclasses.replace(spec, rdp_port=0, https_port=0) for spec in specs]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        run(specs, args.dir)
    except OSError as error:
        print(f"balancer lab: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
