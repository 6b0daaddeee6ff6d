"""Imported by every Python that has this directory on its path: with ``BENCH_SAMPLES`` set, the
control-plane bench's sampling profiler is installed (``bench.sampled``), so that the engine
`balancer serve` starts is sampled as well as `serve` itself."""

import os
from pathlib import Path

if os.environ.get("BENCH_SAMPLES"):
    from bench.sampled import install

    install(Path(os.environ["BENCH_SAMPLES"]))
