"""Preemption points: long model work (an image encode) pauses between stages so that waiting
higher-priority work (another user's click) can run on the same worker thread.

The scheduler installs a hook on its worker thread; the model calls `yield_point()` between encoder
blocks. Outside a scheduler (evaluation, training, tests) there is no hook and nothing happens.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Callable, Iterator

_local = threading.local()


def yield_point() -> None:
    """Lets the scheduler run waiting urgent work, or abort this job (cancelled, past its deadline)."""
    hook: Callable[[], None] | None = getattr(_local, "hook", None)
    if hook is not None:
        hook()


@contextmanager
def preemption_hook(hook: Callable[[], None] | None) -> Iterator[None]:
    """Installs hook for yield_point() calls made on this thread inside the block (None disables)."""
    previous = getattr(_local, "hook", None)
    _local.hook = hook
    try:
        yield
    finally:
        _local.hook = previous
