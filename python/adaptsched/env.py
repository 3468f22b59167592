"""The launch environment adaptsched gives a training job (ARCHITECTURE §5).

The names match ``adaptsched_api::env`` in ``crates/api/src/lib.rs``; see ``docs/protocol.md``.
Parsing happens once, at start-up, so a malformed value fails the job before it trains
rather than somewhere inside the training loop.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Tuple

DATA_DIR = "ADAPTSCHED_DATA_DIR"
URL = "ADAPTSCHED_URL"
TOKEN = "ADAPTSCHED_TOKEN"
JOB_ID = "ADAPTSCHED_JOB_ID"
WORLD_SIZE = "WORLD_SIZE"
RANK = "RANK"
LOCAL_RANK = "LOCAL_RANK"
MASTER_ADDR = "MASTER_ADDR"
MASTER_PORT = "MASTER_PORT"
CUDA_VISIBLE_DEVICES = "CUDA_VISIBLE_DEVICES"
CPU_SLOTS = "ADAPTSCHED_CPU_SLOTS"
BATCH_SIZE = "ADAPTSCHED_BATCH_SIZE"
LOCAL_BATCH_SIZE = "ADAPTSCHED_LOCAL_BATCH_SIZE"
ACCUMULATION_STEPS = "ADAPTSCHED_ACCUMULATION_STEPS"
LR_SCALE = "ADAPTSCHED_LR_SCALE"
CHECKPOINT_DIR = "ADAPTSCHED_CHECKPOINT_DIR"
RESTARTS = "ADAPTSCHED_RESTARTS"
REPLICAS = "ADAPTSCHED_REPLICAS"
NODES = "ADAPTSCHED_NODES"

# Files the server writes into its data dir (adaptsched_api::data_dir).
URL_FILE = "server.url"
TOKEN_FILE = "token"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class LaunchEnv:
    """Everything the scheduler told this process at launch.

    Batch fields follow the scheduler's convention: ``accumulation_steps`` counts the
    *extra* micro-batches before the synchronizing one, so
    ``batch_size == local_batch_size * (accumulation_steps + 1) * replicas``.
    """

    job_id: Optional[int] = None
    url: Optional[str] = None
    token: Optional[str] = None
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    master_addr: Optional[str] = None
    master_port: Optional[int] = None
    replicas: int = 1
    nodes: int = 1
    cpu_slots: Tuple[int, ...] = ()
    batch_size: Optional[int] = None
    local_batch_size: Optional[int] = None
    accumulation_steps: int = 0
    lr_scale: float = 1.0
    checkpoint_dir: Optional[str] = None
    restarts: int = 0

    @property
    def managed(self) -> bool:
        """True when the job runs under an adaptsched server it can report to."""
        return self.url is not None and self.job_id is not None

    @property
    def is_writer(self) -> bool:
        """Rank 0 writes checkpoints (every rank holds the same replicated state)."""
        return self.rank == 0

    @classmethod
    def from_environ(cls, environ: Optional[Mapping[str, str]] = None) -> "LaunchEnv":
        """Parses ``environ`` (default ``os.environ``); raises ValueError naming a bad variable."""
        env = os.environ if environ is None else environ
        url, token = _server_address(env)
        accumulation = _int(env, ACCUMULATION_STEPS, minimum=0) or 0
        cpu_slots = _slots(env)
        world_size = _int(env, WORLD_SIZE, minimum=1) or 1
        replicas = _int(env, REPLICAS, minimum=1) or (len(cpu_slots) or world_size)
        batch, local = _batch(env, replicas, accumulation)
        port = _int(env, MASTER_PORT, minimum=0)
        return cls(
            job_id=_int(env, JOB_ID, minimum=0),
            url=url,
            token=token,
            world_size=world_size,
            rank=_int(env, RANK, minimum=0) or 0,
            local_rank=_int(env, LOCAL_RANK, minimum=0) or 0,
            master_addr=_str(env, MASTER_ADDR),
            master_port=port,
            replicas=replicas,
            nodes=_int(env, NODES, minimum=1) or 1,
            cpu_slots=cpu_slots,
            batch_size=batch,
            local_batch_size=local,
            accumulation_steps=accumulation,
            lr_scale=_float(env, LR_SCALE, default=1.0),
            checkpoint_dir=_checkpoint_dir(env),
            restarts=_int(env, RESTARTS, minimum=0) or 0,
        )


def _str(env: Mapping[str, str], name: str) -> Optional[str]:
    """An unset or blank variable is absent: launchers often export empty strings."""
    value = env.get(name, "").strip()
    return value or None


def _int(env: Mapping[str, str], name: str, minimum: int) -> Optional[int]:
    text = _str(env, name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {text!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    text = _str(env, name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name}: expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name}: expected a positive finite number, got {text!r}")
    return value


def _slots(env: Mapping[str, str]) -> Tuple[int, ...]:
    text = _str(env, CPU_SLOTS)
    if text is None:
        return ()
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{CPU_SLOTS}: expected comma-separated slot indices, got {text!r}") from None


def _batch(env: Mapping[str, str], replicas: int, accumulation: int) -> Tuple[Optional[int], Optional[int]]:
    """Fills in whichever of global/local batch size is missing from the other."""
    batch = _int(env, BATCH_SIZE, minimum=1)
    local = _int(env, LOCAL_BATCH_SIZE, minimum=1)
    per_local = replicas * (accumulation + 1)
    if batch is None and local is not None:
        batch = local * per_local
    elif local is None and batch is not None:
        local = -(-batch // per_local)  # ceil: never fewer samples than asked for
    return batch, local


def _server_address(env: Mapping[str, str]) -> Tuple[Optional[str], Optional[str]]:
    """URL and token from the environment, else from the server's data dir on this machine."""
    url, token = _str(env, URL), _str(env, TOKEN)
    data_dir = _str(env, DATA_DIR)
    if data_dir is not None:
        url = url or _read_line(Path(data_dir) / URL_FILE)
        token = token or _read_line(Path(data_dir) / TOKEN_FILE)
    return (url.rstrip("/") if url else None), token


def _checkpoint_dir(env: Mapping[str, str]) -> Optional[str]:
    explicit = _str(env, CHECKPOINT_DIR)
    data_dir, job = _str(env, DATA_DIR), _str(env, JOB_ID)
    if explicit is None and data_dir is not None and job is not None:
        return str(Path(data_dir) / CHECKPOINTS_DIR / job)
    return explicit


def _read_line(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
