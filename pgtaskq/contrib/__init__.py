"""Integrations with web frameworks and service managers (optional extras).

Nothing here is imported by ``pgtaskq`` itself: each integration pulls in its framework
only when the user imports it, so the core keeps its small dependency set.
"""
