"""Atomic checkpoints in the job's checkpoint dir: save, resume from the latest, keep the last N.

A checkpoint is written to a temporary file in the same directory, fsync'ed, renamed over
its final name with ``os.replace`` and the directory fsync'ed, so a job killed at any moment
(SIGKILL after the grace period, a node crash) leaves either the previous checkpoint or the
new one, never a torn file. Files are named ``ckpt-<step, 12 digits>.pkl`` so the latest is
simply the largest name.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, List, Optional, Tuple

LOG = logging.getLogger("adaptsched")

PREFIX = "ckpt-"
SUFFIX = ".pkl"
_NAME = re.compile(r"^ckpt-(\d{12,})\.pkl$")
_TEMP_PREFIX = ".tmp-ckpt-"

Dump = Callable[[Any, IO[bytes]], None]
Load = Callable[[IO[bytes]], Any]


def _pickle_dump(state: Any, file: IO[bytes]) -> None:
    pickle.dump(state, file, protocol=pickle.HIGHEST_PROTOCOL)


class Checkpointer:
    """Saves and loads ``(step, state)`` checkpoints in one directory.

    ``dump``/``load`` default to pickle; pass ``torch.save``/``torch.load`` for tensors.
    Only the writer (rank 0 by convention) should call ``save``; every rank may load.
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 3, dump: Dump = _pickle_dump,
                 load: Load = pickle.load) -> None:
        if keep < 1:
            raise ValueError(f"keep: expected at least 1, got {keep}")
        self.directory = Path(directory)
        self.keep = keep
        self._dump = dump
        self._load = load

    def path_for(self, step: int) -> Path:
        return self.directory / f"{PREFIX}{step:012d}{SUFFIX}"

    def steps(self) -> List[int]:
        """Steps that have a checkpoint, oldest first."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(int(m.group(1)) for m in map(_NAME.match, names) if m)

    def save(self, step: int, state: Any) -> Path:
        """Writes the checkpoint for ``step`` atomically, then prunes old ones."""
        if step < 0:
            raise ValueError(f"step: expected >= 0, got {step}")
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.path_for(step)
        fd, temp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as file:
                self._dump({"step": step, "state": state}, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, final)
        except BaseException:
            _remove(Path(temp))
            raise
        _fsync_dir(self.directory)
        self._prune()
        return final

    def load_latest(self) -> Optional[Tuple[int, Any]]:
        """``(step, state)`` of the newest readable checkpoint, or None when there is none.

        An unreadable newest file (written by something other than ``save``) is skipped with
        a warning rather than failing the restart: an older checkpoint beats starting over.
        """
        for step in reversed(self.steps()):
            path = self.path_for(step)
            try:
                with open(path, "rb") as file:
                    saved = self._load(file)
                return int(saved["step"]), saved["state"]
            except Exception as error:
                LOG.warning("adaptsched: skipping unreadable checkpoint %s: %r", path, error)
        return None

    def _prune(self) -> None:
        for step in self.steps()[: -self.keep]:
            _remove(self.path_for(step))
        # Temp files of a writer killed mid-save; ours is already renamed.
        for name in os.listdir(self.directory):
            if name.startswith(_TEMP_PREFIX):
                _remove(self.directory / name)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def _fsync_dir(directory: Path) -> None:
    """Makes the rename itself durable; some filesystems do not support it, which is fine."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
