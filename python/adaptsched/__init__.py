"""adaptsched training-side client: launch environment, step reports, checkpoints, SIGTERM.

Standard library only. Typical use (docs/protocol.md has the wire protocol behind it)::

    import adaptsched
    job = adaptsched.init()                  # parses the env, installs the SIGTERM handler
    resumed = job.load_latest()              # (step, state) or None
    for step in ...:
        ...train one optimizer step on job.local_batch_size() samples per replica...
        job.report(step, samples, loss, step_time, sync_time, grad_sqr, grad_var)
        if job.should_stop():                # the scheduler is resizing or stopping us
            job.exit_for_resize(step, state) # checkpoint, flush, exit 0

Run standalone (no ``ADAPTSCHED_URL``/``ADAPTSCHED_JOB_ID``), reports go nowhere and batch
getters return the defaults you pass, so the same script works with and without a server.
The PyTorch helpers live in ``adaptsched.torch`` (imported only where torch is installed).
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

from .checkpoint import Checkpointer
from .env import LaunchEnv
from .gns import GradientNoiseEstimator, adascale_gain, estimate, estimate_from_gradients
from .lifecycle import EXIT_CHECKPOINTED, StopSignal, exit_for_resize
from .reporter import Reporter

__all__ = [
    "Checkpointer", "EXIT_CHECKPOINTED", "GradientNoiseEstimator", "Job", "LaunchEnv", "Reporter",
    "StopSignal", "accumulation_steps", "adascale_gain", "batch_size", "estimate",
    "estimate_from_gradients", "exit_for_resize", "init", "job", "local_batch_size", "lr_scale",
    "replicas", "report", "should_stop",
]
__version__ = "0.1.0"


class Job:
    """One training process's view of its adaptsched job."""

    def __init__(
        self,
        env: Optional[LaunchEnv] = None,
        *,
        checkpoint_dir: Optional[str | os.PathLike] = None,
        keep_checkpoints: int = 3,
        install_signal_handler: bool = True,
        reporter: Optional[Reporter] = None,
    ) -> None:
        self.env = env if env is not None else LaunchEnv.from_environ()
        self.reporter = reporter if reporter is not None else Reporter(self.env.url, self.env.job_id, self.env.token)
        directory = checkpoint_dir if checkpoint_dir is not None else self.env.checkpoint_dir
        self.checkpoints = Checkpointer(directory, keep=keep_checkpoints) if directory is not None else None
        self.stop = StopSignal()
        if install_signal_handler:
            self.stop.install()

    # ---- the batch decision ---------------------------------------------------------------

    def batch_size(self, default: Optional[int] = None) -> Optional[int]:
        """Global batch size (samples per optimizer step over all replicas)."""
        return self.env.batch_size if self.env.batch_size is not None else default

    def local_batch_size(self, default: Optional[int] = None) -> Optional[int]:
        """Samples per replica per micro-batch."""
        return self.env.local_batch_size if self.env.local_batch_size is not None else default

    def accumulation_steps(self) -> int:
        """Extra micro-batches accumulated before each synchronizing one (0 = none)."""
        return self.env.accumulation_steps

    def lr_scale(self) -> float:
        """Multiply the learning rate tuned for the initial batch size by this."""
        return self.env.lr_scale

    def replicas(self) -> int:
        return self.env.replicas

    # ---- reports --------------------------------------------------------------------------

    def report(self, step: int, samples: int, loss: float, step_time: float,
               sync_time: Optional[float] = None, grad_sqr: Optional[float] = None,
               grad_var: Optional[float] = None, batch_size: Optional[int] = None) -> None:
        """Queues one optimizer step's report; microseconds, never raises. Only rank 0 sends:
        the server wants one report per job step, not one per replica."""
        if self.env.rank == 0:
            self.reporter.report(step, samples, loss, step_time, sync_time, grad_sqr, grad_var, batch_size)

    def flush(self, timeout: float = 5.0) -> bool:
        return self.reporter.flush(timeout)

    # ---- checkpoints and stopping ---------------------------------------------------------

    def should_stop(self) -> bool:
        """True once SIGTERM arrived: checkpoint and call ``exit_for_resize``."""
        return self.stop.is_set()

    def save(self, step: int, state: Any) -> None:
        """Checkpoints on the writer rank; a no-op elsewhere or without a checkpoint dir."""
        if self.checkpoints is not None and self.env.is_writer:
            self.checkpoints.save(step, state)

    def load_latest(self) -> Optional[Tuple[int, Any]]:
        return self.checkpoints.load_latest() if self.checkpoints is not None else None

    def exit_for_resize(self, step: Optional[int] = None, state: Any = None, flush_timeout: float = 5.0) -> None:
        """Saves ``state`` at ``step`` (when given), flushes reports, exits with code 0.

        The flush is bounded (the grace period is for the checkpoint too) and closes the
        reporter, so the exit-time flush does not wait on an unreachable server again."""
        save = (lambda: self.save(step, state)) if step is not None else None
        exit_for_resize(save=save, flush=lambda: self.reporter.close(flush_timeout))

    def __enter__(self) -> "Job":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.reporter.close()


_default: Optional[Job] = None


def init(**kwargs: Any) -> Job:
    """Creates the process-wide job (call early, from the main thread, so SIGTERM is caught)."""
    global _default
    _default = Job(**kwargs)
    return _default


def job() -> Job:
    """The process-wide job, created on first use."""
    return _default if _default is not None else init()


def report(step: int, samples: int, loss: float, step_time: float, sync_time: Optional[float] = None,
           grad_sqr: Optional[float] = None, grad_var: Optional[float] = None,
           batch_size: Optional[int] = None) -> None:
    job().report(step, samples, loss, step_time, sync_time, grad_sqr, grad_var, batch_size)


def batch_size(default: Optional[int] = None) -> Optional[int]:
    return job().batch_size(default)


def local_batch_size(default: Optional[int] = None) -> Optional[int]:
    return job().local_batch_size(default)


def accumulation_steps() -> int:
    return job().accumulation_steps()


def lr_scale() -> float:
    return job().lr_scale()


def replicas() -> int:
    return job().replicas()


def should_stop() -> bool:
    return job().should_stop()
