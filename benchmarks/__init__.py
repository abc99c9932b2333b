"""pgtaskq's benchmarks: ``python -m benchmarks --help`` (see README.rst)."""
