"""Drain and latency of pgtaskq alone, for before/after comparisons of two source trees.

Run from the root of each tree, alternating, on the same server (the figures of one run
mean little on a shared machine; the ratio of neighbouring runs does)::

    PGTASKQ_BENCH_DSN=... python -m benchmarks.bench_ab [RUNS]

Prints one ``RESULT {json}`` line with the drain rates and the latency percentiles.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.bench_worker import Context, scenario_drain, scenario_latency


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    ctx = Context(os.environ["PGTASKQ_BENCH_DSN"], None, False, runs,
                  Path(tempfile.mkdtemp(prefix="pgtaskq-ab-")))
    _, drain = scenario_drain(ctx, ["pgtaskq"])
    _, latency = scenario_latency(ctx, ["pgtaskq"])
    print("RESULT", json.dumps({"tree": os.getcwd(), "drain": drain.get("pgtaskq"),
                                "latency": latency.get("pgtaskq")}, default=str))


if __name__ == "__main__":
    main()
