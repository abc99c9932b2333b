"""sd_notify without a dependency: READY, STOPPING, STATUS and WATCHDOG pings.

systemd passes ``NOTIFY_SOCKET`` to a ``Type=notify`` service; a datagram with
``READY=1`` says the worker is up, ``WATCHDOG=1`` (at least every ``WATCHDOG_USEC / 2``)
that its main loop is alive. Without ``NOTIFY_SOCKET`` every call does nothing.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send ``message`` to systemd; False when not run by systemd or it failed."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG pings (half systemd's WatchdogSec), or None if unset."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000 / 2
    except ValueError:
        return None
