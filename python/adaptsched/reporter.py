"""Non-blocking, batched step reports to ``POST {url}/v1/jobs/{id}/metrics``.

``Reporter.report`` only appends a tuple to an in-memory queue (about a microsecond), so it
never slows or breaks the training loop. A daemon thread posts what has queued up every
``flush_interval`` seconds (or sooner once ``max_batch`` steps wait) as a ``MetricsReport``
(``{"steps": [StepReport, ...]}``, see crates/api). Failed posts keep their steps and retry
with exponential backoff; only a bounded backlog is kept, oldest dropped first, so a dead
server cannot exhaust the trainer's memory. ``close`` (also run at exit) flushes.
"""

from __future__ import annotations

import atexit
import collections
import json
import logging
import math
import random
import threading
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Deque, Dict, List, Optional, Tuple

LOG = logging.getLogger("adaptsched")

# (step, samples, loss, step_time, sync_time, grad_sqr, grad_var, batch_size)
Record = Tuple[int, int, float, float, Optional[float], Optional[float], Optional[float], Optional[int]]

# Statuses worth retrying: the server is overloaded, restarting or timed out. Any other 4xx
# means the batch itself was refused, and sending it again would only block the queue.
RETRYABLE_STATUS = {408, 425, 429, 500, 502, 503, 504}


class PostError(Exception):
    """A post failed; ``retryable`` says whether sending the same body again may succeed."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def http_post(url: str, token: Optional[str], body: bytes, timeout: float) -> None:
    """POSTs JSON; raises PostError. Ignores *_proxy variables: the server is cluster-local."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        detail = error.read(500).decode("utf-8", "replace")
        raise PostError(f"HTTP {error.code}: {detail}", error.code in RETRYABLE_STATUS) from None
    except (urllib.error.URLError, OSError) as error:
        raise PostError(str(getattr(error, "reason", error)), True) from None


def step_json(record: Record) -> Optional[Dict[str, Any]]:
    """A StepReport object, or None when the step cannot be sent (non-finite loss or time).

    JSON has no NaN: one NaN would get the whole batch refused, so non-finite optional
    fields are left out and a step whose loss or time is not finite is skipped.
    """
    step, samples, loss, step_time, sync_time, grad_sqr, grad_var, batch_size = record
    if not (math.isfinite(loss) and math.isfinite(step_time)):
        return None
    body: Dict[str, Any] = {"step": step, "samples": samples, "loss": loss, "step_time": step_time}
    for name, value in (("sync_time", sync_time), ("grad_sqr", grad_sqr), ("grad_var", grad_var)):
        if value is not None and math.isfinite(value):
            body[name] = value
    if batch_size is not None:
        body["batch_size"] = batch_size
    return body


def _optional_float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


class Reporter:
    """Queues step reports and posts them from a background thread.

    With ``url`` or ``job_id`` unset (a standalone run) reports are counted and dropped.
    """

    def __init__(
        self,
        url: Optional[str],
        job_id: Optional[int],
        token: Optional[str] = None,
        *,
        flush_interval: float = 1.0,
        max_batch: int = 500,
        max_pending: int = 100_000,
        timeout: float = 5.0,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        post: Callable[[str, Optional[str], bytes, float], None] = http_post,
    ) -> None:
        self.endpoint = f"{url.rstrip('/')}/v1/jobs/{job_id}/metrics" if url and job_id is not None else None
        self._token = token
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._timeout = timeout
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._post = post
        self._lock = threading.Lock()
        self._progress = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._pending: Deque[Record] = collections.deque()
        self._thread: Optional[threading.Thread] = None
        self._closing = False
        # Counters (under _lock): every queued step ends up sent, rejected or dropped.
        self.queued = 0
        self.sent = 0
        self.rejected = 0
        self.dropped = 0
        self.failed_posts = 0
        self._last_warning = -math.inf

    # ---- the training thread's side -------------------------------------------------------

    def report(
        self,
        step: int,
        samples: int,
        loss: float,
        step_time: float,
        sync_time: Optional[float] = None,
        grad_sqr: Optional[float] = None,
        grad_var: Optional[float] = None,
        batch_size: Optional[int] = None,
    ) -> None:
        """Queues one step; returns at once and never raises."""
        try:
            record: Record = (
                int(step),
                int(samples),
                float(loss),
                float(step_time),
                _optional_float(sync_time),
                _optional_float(grad_sqr),
                _optional_float(grad_var),
                None if batch_size is None else int(batch_size),
            )
        except Exception:  # a bad value must not crash training; say so once in a while
            self._warn("dropped a step report with values that are not numbers")
            return
        if self.endpoint is None:
            return
        with self._lock:
            self._pending.append(record)
            self.queued += 1
            self._trim_locked()
            backlog = len(self._pending)
        if self._thread is None:
            self._start()
        if backlog == self._max_batch:
            # A full batch is waiting: send it now rather than at the next interval. Only on
            # the crossing, so that a backlog kept by a down server does not cut the backoff.
            self._wake.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Waits until every step queued so far is sent (or given up on); False on timeout."""
        if self.endpoint is None or self._thread is None:
            return True
        if self._closing:  # the thread is gone: nothing more will be sent
            with self._lock:
                return self.sent + self.rejected + self.dropped >= self.queued
        deadline = time.monotonic() + timeout
        with self._lock:
            target = self.queued
            self._wake.set()
            # Resolved = sent, refused or dropped; a batch in flight is none of these yet.
            while self.sent + self.rejected + self.dropped < target:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._progress.wait(min(left, 0.05))
                self._wake.set()  # cut a running backoff short: this is the last chance
        return True

    def close(self, timeout: float = 5.0) -> bool:
        """Flushes and stops the thread. Safe to call twice; runs at interpreter exit."""
        flushed = self.flush(timeout)
        self._closing = True
        self._wake.set()
        if not flushed:
            with self._lock:
                left = len(self._pending)
            LOG.warning("adaptsched: %d step reports not delivered at exit (server unreachable)", left)
        return flushed

    def stats(self) -> Dict[str, int]:
        with self._lock:
            return {
                "queued": self.queued,
                "sent": self.sent,
                "rejected": self.rejected,
                "dropped": self.dropped,
                "pending": len(self._pending),
                "failed_posts": self.failed_posts,
            }

    # ---- the background thread's side -----------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, name="adaptsched-reporter", daemon=True)
            self._thread.start()
        atexit.register(self.close)

    def _run(self) -> None:
        delay = self._flush_interval
        backoff = self._backoff_initial
        while not self._closing:
            self._wake.wait(delay)
            self._wake.clear()
            if self._send_all():
                delay, backoff = self._flush_interval, self._backoff_initial
            else:
                # Jitter keeps many jobs from hammering a restarting server in lockstep.
                delay = backoff * random.uniform(0.5, 1.0)
                backoff = min(backoff * 2, self._backoff_max)

    def _send_all(self) -> bool:
        """Posts the backlog batch by batch; False when a post failed and should be retried."""
        while True:
            with self._lock:
                batch = [self._pending.popleft() for _ in range(min(self._max_batch, len(self._pending)))]
            if not batch:
                return True
            if not self._send(batch):
                return False

    def _send(self, batch: List[Record]) -> bool:
        steps = [body for body in map(step_json, batch) if body is not None]
        unsendable = len(batch) - len(steps)
        try:
            if steps:
                self._post(self.endpoint, self._token, json.dumps({"steps": steps}).encode(), self._timeout)
        except PostError as error:
            with self._progress:
                self.failed_posts += 1
                if error.retryable:
                    self._pending.extendleft(reversed(batch))
                    self._trim_locked()
                else:
                    self.rejected += len(batch)
                self._progress.notify_all()
            self._warn(f"posting {len(batch)} step reports failed ({error}); "
                       + ("will retry" if error.retryable else "server refused them, dropped"))
            return not error.retryable
        except Exception as error:  # a bug in a custom post hook must not kill the thread
            with self._progress:
                self.failed_posts += 1
                self._pending.extendleft(reversed(batch))
                self._progress.notify_all()
            self._warn(f"posting step reports failed unexpectedly: {error!r}")
            return False
        with self._progress:
            self.sent += len(steps)
            self.rejected += unsendable
            self._progress.notify_all()
        if unsendable:
            self._warn(f"skipped {unsendable} step reports with a non-finite loss or step time")
        return True

    def _trim_locked(self) -> None:
        """Bounds the backlog, dropping the oldest steps (the newest matter most to the fit)."""
        while len(self._pending) > self._max_pending:
            self._pending.popleft()
            self.dropped += 1

    def _warn(self, message: str) -> None:
        """Logs at most one warning a minute: a down server would otherwise flood stderr."""
        now = time.monotonic()
        if now - self._last_warning >= 60.0:
            self._last_warning = now
            LOG.warning("adaptsched: %s", message)
