"""One small app per queue system, each running the same job body (``benchmarks.body``)."""
