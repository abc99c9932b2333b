"""``python -m pgtaskq``: the same command line as the ``pgtaskq`` script."""

from pgtaskq.cli import main

main()
