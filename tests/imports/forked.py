"""Run in a partition process by tests/imports/test_service.py (kept free of imports, so
what the process holds is what it started with)."""

from __future__ import annotations

from typing import Any


def report(queue: Any) -> None:
    """Whether the import code was loaded before this ran, and the CPU spent so far."""
    import resource
    import sys

    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put(("app.imports.service" in sys.modules, usage.ru_utime + usage.ru_stime))
