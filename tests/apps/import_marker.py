"""Importing this module is the side effect: a test checks that reading a job whose
``task`` column names it never imports it (a row's value is not code to load)."""

IMPORTED = True


def anything() -> None: ...
