"""The tasks of ``apps.logged_plain`` in an application that configures logging itself
(``logging.basicConfig`` at import, as many scripts do)."""

from __future__ import annotations

import logging

logging.basicConfig(level=logging.WARNING, format="BASIC %(levelname)s %(name)s %(message)s")

from apps.logged_plain import tq  # noqa: E402  (logging first, as such apps do)

__all__ = ["tq"]
