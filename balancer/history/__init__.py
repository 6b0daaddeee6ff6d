"""History: the node's own time series, in data_dir/history.db beside balancer.db, for the
Reports graphs and ``GET /api/v1/metrics/history``.

Every 10 s the sampler (``sampler``) reads the counters the node already keeps and writes one
sample; the store (``store``) folds samples into 5 min and 1 h points and prunes each tier, a
little at each write, so the file stays within a bound in bytes (``store.size_bound``).
"""

from balancer.history.sampler import FILE, Sampler, sample
from balancer.history.store import TIERS, History, Point, Tier, size_bound

__all__ = ["FILE", "TIERS", "History", "Point", "Sampler", "Tier", "sample", "size_bound"]
