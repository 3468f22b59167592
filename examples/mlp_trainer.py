#!/usr/bin/env python3
"""A real, dependency-light adaptsched job: an MLP classifier trained with mini-batch SGD.

Pure Python (standard library). It generates a synthetic classification dataset
deterministically from ``--seed``, then trains a one-hidden-layer tanh MLP with softmax
cross-entropy, doing data parallelism the way a GPU job would: the global batch is split
over ``ADAPTSCHED_REPLICAS`` replicas, each computes the gradient of its share (its local
batch, over ``ADAPTSCHED_ACCUMULATION_STEPS + 1`` micro-batches) in its own worker process,
and the parent averages them ("sync") and takes an SGD step. So more replicas really run
faster on more cores, and the step time grows with the local batch size: the shape the
scheduler's throughput model fits.

Every step is reported to the scheduler (loss, step time, sync time, and grad_sqr/grad_var
estimated from the replicas' gradients). On SIGTERM it finishes the step, checkpoints and
exits 0; started again it resumes from the latest checkpoint, with whatever batch size and
replica count it is given then. Run standalone, the CLI flags stand in for the environment:

    python3 examples/mlp_trainer.py --epochs 5 --replicas 2 --batch-size 64 --checkpoint-dir /tmp/ck

Progress goes to stdout as JSON lines (``{"event": "step", ...}``) for humans and tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

try:
    import adaptsched
except ImportError:  # running from a checkout without `pip install ./python`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import adaptsched

from adaptsched import env as launch_env
from adaptsched.gns import GradientNoiseEstimator, estimate_from_gradients

Dims = Tuple[int, int, int]  # (inputs, hidden units, classes)
Vector = List[float]
Dataset = Tuple[List[Vector], List[int]]
# A replica's result: (micro-batch gradients, their sample counts, summed loss, compute seconds)
ReplicaResult = Tuple[List[Vector], List[int], float, float]


# ---- data and model ---------------------------------------------------------------------------

def make_dataset(seed: int, size: int, dims: Dims) -> Dataset:
    """Gaussian inputs labelled by a random nonlinear teacher plus Gumbel noise: learnable by
    the MLP but not separable, so the loss falls steadily and then levels off above zero."""
    rng = random.Random(seed)
    inputs, _, classes = dims
    teacher = [[rng.gauss(0.0, 1.0) for _ in range(inputs)] for _ in range(classes)]
    xs: List[Vector] = []
    ys: List[int] = []
    for _ in range(size):
        x = [rng.gauss(0.0, 1.0) for _ in range(inputs)]
        features = [math.tanh(1.5 * v) for v in x]
        scores = [sum(w * f for w, f in zip(row, features)) - 0.5 * math.log(-math.log(rng.random() or 1e-12))
                  for row in teacher]
        xs.append(x)
        ys.append(max(range(classes), key=scores.__getitem__))
    return xs, ys


def parameter_count(dims: Dims) -> int:
    inputs, hidden, classes = dims
    return hidden * inputs + hidden + classes * hidden + classes


def init_params(seed: int, dims: Dims) -> Vector:
    """Flat parameter vector [W1 (hidden×inputs), b1, W2 (classes×hidden), b2], Xavier-ish."""
    rng = random.Random(seed + 1)
    inputs, hidden, classes = dims
    w1 = [rng.gauss(0.0, 1.0 / math.sqrt(inputs)) for _ in range(hidden * inputs)]
    w2 = [rng.gauss(0.0, 1.0 / math.sqrt(hidden)) for _ in range(classes * hidden)]
    return w1 + [0.0] * hidden + w2 + [0.0] * classes


def batch_gradient(params: Sequence[float], xs: Sequence[Vector], ys: Sequence[int],
                   indices: Sequence[int], dims: Dims) -> Tuple[Vector, float]:
    """Mean cross-entropy gradient over ``indices`` (flat, like ``params``) and the summed loss."""
    inputs, hidden, classes = dims
    w1 = [params[h * inputs:(h + 1) * inputs] for h in range(hidden)]
    b1 = params[hidden * inputs:hidden * inputs + hidden]
    base = hidden * inputs + hidden
    w2 = [params[base + c * hidden:base + (c + 1) * hidden] for c in range(classes)]
    b2 = params[base + classes * hidden:]
    w2_columns = list(zip(*w2))
    g_w1 = [[0.0] * inputs for _ in range(hidden)]
    g_b1 = [0.0] * hidden
    g_w2 = [[0.0] * hidden for _ in range(classes)]
    g_b2 = [0.0] * classes
    loss = 0.0
    for i in indices:
        x, y = xs[i], ys[i]
        h = [math.tanh(sum(w * v for w, v in zip(row, x)) + b) for row, b in zip(w1, b1)]
        logits = [sum(w * v for w, v in zip(row, h)) + b for row, b in zip(w2, b2)]
        top = max(logits)
        exps = [math.exp(z - top) for z in logits]
        total = sum(exps)
        loss += math.log(total) + top - logits[y]
        d_logits = [e / total for e in exps]
        d_logits[y] -= 1.0
        for c, d in enumerate(d_logits):
            g_b2[c] += d
            g_w2[c] = [g + d * v for g, v in zip(g_w2[c], h)]
        d_hidden = [sum(d * w for d, w in zip(d_logits, column)) * (1.0 - v * v)
                    for column, v in zip(w2_columns, h)]
        for j, d in enumerate(d_hidden):
            g_b1[j] += d
            g_w1[j] = [g + d * v for g, v in zip(g_w1[j], x)]
    scale = 1.0 / len(indices)
    flat = [g for row in g_w1 for g in row] + g_b1 + [g for row in g_w2 for g in row] + g_b2
    return [g * scale for g in flat], loss


def replica_gradients(params: Sequence[float], data: Dataset, micro_batches: Sequence[Sequence[int]],
                      dims: Dims) -> ReplicaResult:
    """One replica's work for a step: a gradient per micro-batch, done one after another."""
    started = time.perf_counter()
    gradients, sizes, loss = [], [], 0.0
    for indices in micro_batches:
        gradient, batch_loss = batch_gradient(params, data[0], data[1], indices, dims)
        gradients.append(gradient)
        sizes.append(len(indices))
        loss += batch_loss
    return gradients, sizes, loss, time.perf_counter() - started


# ---- replicas ---------------------------------------------------------------------------------

def replica_worker(conn: Any, seed: int, size: int, dims: Dims) -> None:
    """Worker process: holds the dataset, answers (params, micro-batches) with gradients.

    It ignores SIGTERM/SIGINT: the scheduler may signal the whole process group, and only
    the parent decides when to stop (after the step in flight and a checkpoint).
    """
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    data = make_dataset(seed, size, dims)
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the parent is gone
            return
        if message is None:
            return
        params, micro_batches = message
        conn.send(replica_gradients(params, data, micro_batches, dims))


class Replicas:
    """K replicas: in this process when K = 1, else K worker processes computing in parallel."""

    def __init__(self, count: int, seed: int, size: int, dims: Dims, data: Dataset) -> None:
        self.count = count
        self._dims = dims
        self._data = data
        self._conns: List[Any] = []
        self._procs: List[Any] = []
        if count > 1:
            # spawn, not fork: the parent runs the report thread, and forking a threaded
            # process can copy a held lock into the child.
            context = multiprocessing.get_context("spawn")
            for _ in range(count):
                parent, child = context.Pipe()
                proc = context.Process(target=replica_worker, args=(child, seed, size, dims), daemon=True)
                proc.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(proc)
            for conn in self._conns:
                try:
                    conn.recv()  # "ready": the worker built its copy of the dataset
                except EOFError:
                    self.close()
                    raise RuntimeError("a replica worker died while starting (its traceback is on stderr)") from None

    def compute(self, params: Vector, work: List[List[List[int]]]) -> List[ReplicaResult]:
        if self.count == 1:
            return [replica_gradients(params, self._data, work[0], self._dims)]
        for conn, micro_batches in zip(self._conns, work):
            conn.send((params, micro_batches))
        return [conn.recv() for conn in self._conns]

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(None)
            except OSError:
                pass
        for proc in self._procs:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []


# ---- training state ---------------------------------------------------------------------------

@dataclass
class TrainState:
    """Everything a resumed run needs; pickled into the checkpoint."""

    params: Vector
    step: int = 0
    samples: int = 0
    epoch: int = 0
    offset: int = 0  # position in this epoch's shuffled order
    loss_avg: float = 0.0
    loss_weight: float = 0.0  # bias correction of the loss average
    noise: Dict[str, float] = field(default_factory=dict)
    done: bool = False

    def smoothed_loss(self) -> Optional[float]:
        return self.loss_avg / self.loss_weight if self.loss_weight > 0 else None


def epoch_order(seed: int, epoch: int, size: int) -> List[int]:
    order = list(range(size))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def take_indices(state: TrainState, count: int, seed: int, size: int) -> List[int]:
    """The next ``count`` sample indices, crossing into the next epoch's order when needed.
    Depends only on (epoch, offset), so a resumed run continues the same data stream."""
    taken: List[int] = []
    while len(taken) < count:
        order = epoch_order(seed, state.epoch, size)
        chunk = order[state.offset:state.offset + count - len(taken)]
        taken.extend(chunk)
        state.offset += len(chunk)
        if state.offset >= size:
            state.epoch, state.offset = state.epoch + 1, 0
    return taken


def split_work(indices: List[int], replicas: int, micro_batches: int, local: int) -> List[List[List[int]]]:
    """work[replica][micro-batch] = its sample indices. With a single micro-batch in the whole
    step, it is halved so the gradient noise still has two small-batch gradients to compare
    (their weighted mean is the same gradient)."""
    work = [[indices[(r * micro_batches + k) * local:(r * micro_batches + k + 1) * local]
             for k in range(micro_batches)] for r in range(replicas)]
    if replicas * micro_batches == 1 and local >= 2:
        only = work[0][0]
        work[0] = [only[:local // 2], only[local // 2:]]
    return work


# ---- configuration ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """The batch decision in effect: from the environment, else from the CLI flags."""

    replicas: int
    local_batch: int
    accumulation: int
    lr: float

    @property
    def global_batch(self) -> int:
        return self.replicas * self.local_batch * (self.accumulation + 1)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-size", type=int, default=2048)
    parser.add_argument("--inputs", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--classes", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=5.0, help="stop after this many passes over the data")
    parser.add_argument("--target-loss", type=float, default=None, help="stop once the smoothed loss is this low")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--lr", type=float, default=0.5, help="learning rate at lr scale 1")
    parser.add_argument("--replicas", type=int, default=1, help="standalone; ADAPTSCHED_REPLICAS wins")
    parser.add_argument("--batch-size", type=int, default=64, help="standalone global batch")
    parser.add_argument("--local-batch-size", type=int, default=None, help="standalone per-replica batch")
    parser.add_argument("--accumulation-steps", type=int, default=0, help="standalone extra micro-batches")
    parser.add_argument("--lr-scale", type=float, default=1.0, help="standalone lr multiplier")
    parser.add_argument("--max-lr", type=float, default=1.0,
                        help="cap on lr × scale: plain SGD on this MLP diverges when an AdaScale gain of 16 meets lr 0.5")
    parser.add_argument("--checkpoint-dir", default=None, help="standalone; ADAPTSCHED_CHECKPOINT_DIR wins")
    parser.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    parser.add_argument("--log-every", type=int, default=10, help="steps between progress lines")
    args = parser.parse_args(argv)
    for name in ("dataset_size", "inputs", "hidden", "classes", "replicas", "batch_size", "checkpoint_every", "log_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def make_plan(args: argparse.Namespace, env: adaptsched.LaunchEnv) -> Plan:
    """Each setting from the launch environment when the scheduler gave it, else the flag."""
    def given(name: str) -> bool:
        return bool(os.environ.get(name, "").strip())

    replicas = env.replicas if given(launch_env.REPLICAS) or given(launch_env.CPU_SLOTS) else args.replicas
    accumulation = env.accumulation_steps if given(launch_env.ACCUMULATION_STEPS) else args.accumulation_steps
    per_local = replicas * (accumulation + 1)
    if given(launch_env.LOCAL_BATCH_SIZE):
        local = env.local_batch_size
    elif given(launch_env.BATCH_SIZE):
        local = -(-env.batch_size // per_local)  # ceil: never fewer samples than asked for
    else:
        local = args.local_batch_size or -(-args.batch_size // per_local)
    scale = env.lr_scale if given(launch_env.LR_SCALE) else args.lr_scale
    lr = min(args.lr * scale, args.max_lr)
    return Plan(replicas=replicas, local_batch=max(local, 1), accumulation=accumulation, lr=lr)


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


# ---- the loop ---------------------------------------------------------------------------------

def train_step(state: TrainState, replicas: Replicas, plan: Plan, data_size: int, seed: int,
               noise: GradientNoiseEstimator) -> Tuple[float, float, float]:
    """One optimizer step; returns (mean loss, step seconds, sync seconds)."""
    started = time.perf_counter()
    indices = take_indices(state, plan.global_batch, seed, data_size)
    work = split_work(indices, plan.replicas, plan.accumulation + 1, plan.local_batch)
    results = replicas.compute(state.params, work)
    computed = time.perf_counter()
    gradients = [g for result in results for g in result[0]]
    sizes = [n for result in results for n in result[1]]
    total = sum(sizes)
    average = [0.0] * len(state.params)
    for gradient, size in zip(gradients, sizes):
        weight = size / total
        average = [a + weight * g for a, g in zip(average, gradient)]
    if len(gradients) >= 2:
        noise.update(*estimate_from_gradients(gradients, sizes))
    state.params = [p - plan.lr * g for p, g in zip(state.params, average)]
    finished = time.perf_counter()
    # Sync = everything beyond the slowest replica's compute: shipping parameters and
    # gradients between processes and averaging them. One replica has nothing to sync.
    slowest = max(result[3] for result in results)
    sync = 0.0 if plan.replicas == 1 else max((computed - started) - slowest, 0.0) + (finished - computed)
    return sum(result[2] for result in results) / total, finished - started, sync


def finished_reason(state: TrainState, args: argparse.Namespace) -> Optional[str]:
    loss = state.smoothed_loss()
    if args.target_loss is not None and loss is not None and loss <= args.target_loss:
        return "target-loss"
    if state.samples >= args.epochs * args.dataset_size:
        return "epochs"
    if args.max_steps is not None and state.step >= args.max_steps:
        return "max-steps"
    return None


def restore(job: adaptsched.Job, seed: int, dims: Dims) -> Tuple[TrainState, bool]:
    """The latest checkpoint's state, or a fresh one; and whether it was resumed."""
    resumed = job.load_latest()
    if resumed is None:
        return TrainState(params=init_params(seed, dims)), False
    # Checkpoints hold plain dicts, not TrainState: readable without this script as __main__.
    state = TrainState(**resumed[1])
    if len(state.params) != parameter_count(dims):
        raise SystemExit(f"checkpoint has {len(state.params)} parameters, this model {parameter_count(dims)}: "
                         "same --inputs/--hidden/--classes as the run that wrote it?")
    return state, True


def train(job: adaptsched.Job, args: argparse.Namespace, plan: Plan, state: TrainState,
          noise: GradientNoiseEstimator, replicas: Replicas) -> str:
    """Steps until done (returns why) or until SIGTERM (checkpoints and exits 0)."""
    def save() -> None:
        state.noise = noise.state_dict()
        job.save(state.step, dataclasses.asdict(state))

    while (reason := finished_reason(state, args)) is None:
        if job.should_stop():
            emit("stopped", step=state.step, loss=state.smoothed_loss())
            save()
            job.exit_for_resize()
        loss, step_time, sync_time = train_step(state, replicas, plan, args.dataset_size, args.seed, noise)
        state.step += 1
        state.samples += plan.global_batch
        state.loss_avg = 0.9 * state.loss_avg + 0.1 * loss
        state.loss_weight = 0.9 * state.loss_weight + 0.1
        grad_sqr, grad_var = noise.reportable()
        job.report(state.step, plan.global_batch, loss, step_time, sync_time, grad_sqr, grad_var,
                   batch_size=plan.global_batch)
        if state.step % args.log_every == 0:
            emit("step", step=state.step, loss=loss, step_time=step_time, sync_time=sync_time,
                 grad_sqr=grad_sqr, grad_var=grad_var, epoch=state.samples / args.dataset_size)
        if state.step % args.checkpoint_every == 0:
            save()
    # Marked done, so a restart after a SIGTERM that raced with the finish exits at once.
    state.done = True
    save()
    return reason


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    env = adaptsched.LaunchEnv.from_environ()
    job = adaptsched.Job(env, checkpoint_dir=env.checkpoint_dir or args.checkpoint_dir)
    plan = make_plan(args, env)
    dims: Dims = (args.inputs, args.hidden, args.classes)
    state, resumed = restore(job, args.seed, dims)
    noise = GradientNoiseEstimator()
    if state.noise:
        noise.load_state_dict(state.noise)
    emit("start", step=state.step, resumed=resumed, restarts=env.restarts, replicas=plan.replicas,
         local_batch=plan.local_batch, accumulation=plan.accumulation, batch=plan.global_batch, lr=plan.lr)
    if state.done:
        emit("done", step=state.step, loss=state.smoothed_loss(), reason="already-finished")
        return 0
    replicas = Replicas(plan.replicas, args.seed, args.dataset_size, dims,
                        make_dataset(args.seed, args.dataset_size, dims))
    try:
        reason = train(job, args, plan, state, noise, replicas)
    finally:
        replicas.close()
    job.flush()
    emit("done", step=state.step, loss=state.smoothed_loss(), reason=reason, epochs=state.samples / args.dataset_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
