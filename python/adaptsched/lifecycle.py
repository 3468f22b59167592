"""SIGTERM handling: a resize or stop arrives as SIGTERM, the job checkpoints and exits 0.

The scheduler sends SIGTERM, waits a grace period (30 s by default), then sends SIGKILL.
Dying inside an arbitrary line of the training loop would lose everything since the last
checkpoint, so the handler only sets a flag; the loop checks ``should_stop()`` between steps,
saves and leaves through ``exit_for_resize()`` with exit code 0 (``EXIT_CHECKPOINTED``). The
server treats any exit that follows its own SIGTERM as stopped-for-resize, not failed, and
starts the job again with its new allocation. A second SIGTERM means "now": the handler
restores the previous disposition and re-delivers the signal.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any, Callable, Optional

# Exit status of a job that checkpointed after SIGTERM (docs/protocol.md).
EXIT_CHECKPOINTED = 0

Handler = Any  # what signal.signal accepts and returns


class StopSignal:
    """A flag set by SIGTERM (and anything that calls ``request``), checked between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Handler] = {}
        self.signal_number: Optional[int] = None

    def install(self, signals: tuple[int, ...] = (signal.SIGTERM,)) -> bool:
        """Installs the handler; False where Python forbids it (outside the main thread)."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for number in signals:
            if number not in self._previous:
                self._previous[number] = signal.signal(number, self._handle)
        return True

    def uninstall(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous)
        self._previous.clear()

    def request(self, signal_number: Optional[int] = None) -> None:
        self.signal_number = signal_number
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def clear(self) -> None:
        self._event.clear()
        self.signal_number = None

    def _handle(self, number: int, _frame: Optional[FrameType]) -> None:
        if not self._event.is_set():
            self.request(number)
            return
        # Second signal: the job did not get to a safe point in time; stop waiting for it.
        # A Python handler that was there before ours gets it; otherwise the default kills us.
        previous = self._previous.pop(number, None)
        signal.signal(number, previous if callable(previous) else signal.SIG_DFL)
        os.kill(os.getpid(), number)


def exit_for_resize(save: Optional[Callable[[], Any]] = None, flush: Optional[Callable[[], Any]] = None) -> None:
    """Saves (if given), flushes reports (if given) and raises ``SystemExit(EXIT_CHECKPOINTED)``.

    Raising instead of ``os._exit`` lets ``finally`` blocks, context managers and atexit
    handlers (the report flush among them) run.
    """
    if save is not None:
        save()
    if flush is not None:
        flush()
    raise SystemExit(EXIT_CHECKPOINTED)
