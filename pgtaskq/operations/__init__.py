"""Operations: what an operator reads and runs beside the queue, neither producer nor worker.

``stats`` (the snapshot ``pgtaskq stats`` and the dashboard show), ``metrics`` (the same,
as Prometheus text), ``health`` (``pgtaskq check``) and ``retention`` (what ``pgtaskq
purge`` and every worker's pruner delete). The producer side (``pgtaskq.queue``) never
imports this package.
"""
