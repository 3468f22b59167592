#!/usr/bin/env python3
"""A PyTorch DistributedDataParallel job using ``adaptsched.torch`` (needs torch; run by hand).

adaptsched starts one process per job (``WORLD_SIZE=1``, ``ADAPTSCHED_REPLICAS=k``); this
script then starts k replica processes of itself with ``WORLD_SIZE=k``, ``RANK``/
``LOCAL_RANK`` and the given ``MASTER_ADDR``/``MASTER_PORT``, and waits for them. Under
``torchrun`` (which sets ``WORLD_SIZE`` itself) it is a replica directly. NCCL on GPUs,
gloo on CPUs. It trains a small MLP on a synthetic dataset generated from ``--seed``,
reports every step from rank 0, measures grad_sqr/grad_var across the replicas
(``GradientNoiseScale``), scales the learning rate with AdaScale (``AdaScaleLR``),
checkpoints from rank 0, and on SIGTERM checkpoints and exits 0. By hand, without a server:

    pip install ./python torch
    ADAPTSCHED_REPLICAS=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 \
        python3 examples/ddp_trainer.py --epochs 3 --checkpoint-dir /tmp/ddp-ck
    torchrun --nproc-per-node 2 examples/ddp_trainer.py --epochs 3 --checkpoint-dir /tmp/ddp-ck

Rank 0 writes progress to stdout as JSON lines (``{"event": "start" | "step" | "stopped" |
"done", ...}``), as ``mlp_trainer.py`` does. CI does not run this file (PyTorch from PyPI
is about 5 GB with its CUDA libraries); ``crates/cli/tests/ddp_torch.rs`` runs it under
``adaptsched serve`` where ``ADAPTSCHED_TORCH_PYTHON`` names a Python with torch.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

try:
    import adaptsched
except ImportError:  # running from a checkout without `pip install ./python`
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "python"))
    import adaptsched
from adaptsched.torch import AdaScaleLR, GradientNoiseScale, stop_agreed


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DDP example job for adaptsched")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset-size", type=int, default=65536)
    parser.add_argument("--epochs", type=float, default=5.0)
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate at --initial-batch-size")
    parser.add_argument("--initial-batch-size", type=int, default=128)
    parser.add_argument("--local-batch-size", type=int, default=64, help="standalone; the env wins")
    parser.add_argument("--checkpoint-dir", default="checkpoints")
    parser.add_argument("--hidden", type=int, default=128, help="width of the hidden layer")
    parser.add_argument("--log-every", type=int, default=20, help="steps between progress lines")
    return parser.parse_args()


def emit(rank: int, event: str, **fields) -> None:
    """One JSON progress line, from rank 0 only."""
    if rank == 0:
        print(json.dumps({"event": event, **fields}), flush=True)


def dataset(seed: int, size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels of a random teacher network with noise, the same on every rank."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(size, 32, generator=generator)
    teacher = torch.randn(32, 10, generator=generator)
    noise = torch.randn(size, 10, generator=generator)
    y = (torch.tanh(x) @ teacher + noise).argmax(dim=1)
    return x.to(device), y.to(device)


CHILD = "ADAPTSCHED_DDP_REPLICA"  # marks the processes this script started itself


def launch_replicas(replicas: int) -> int:
    """Runs ``replicas`` copies of this script as one DDP group and waits for all of them.

    SIGTERM goes to the whole process group, so the replicas see it themselves; this parent
    only notes it (adaptsched's handler sets a flag) and keeps waiting, because the job counts
    as exited when this process exits, and the replicas may still be writing the checkpoint.
    """
    adaptsched.StopSignal().install()
    children = []
    for rank in range(replicas):
        env = dict(os.environ, WORLD_SIZE=str(replicas), RANK=str(rank), LOCAL_RANK=str(rank), **{CHILD: "1"})
        env.setdefault("MASTER_ADDR", "127.0.0.1")
        env.setdefault("MASTER_PORT", "29500")
        children.append(subprocess.Popen([sys.executable, __file__, *sys.argv[1:]], env=env))
    codes = [child.wait() for child in children]
    return next((code for code in codes if code != 0), 0)


def main() -> int:
    env = adaptsched.LaunchEnv.from_environ()
    if env.world_size == 1 and env.replicas > 1 and CHILD not in os.environ:
        return launch_replicas(env.replicas)
    args = parse_args()
    job = adaptsched.init(env=env, checkpoint_dir=env.checkpoint_dir or args.checkpoint_dir)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", job.env.local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(1)  # one CPU slot per replica: one thread each
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # a lone standalone process needs them too
    os.environ.setdefault("MASTER_PORT", "29500")
    dist.init_process_group("nccl" if cuda else "gloo", rank=env.rank, world_size=env.world_size)
    world, rank = dist.get_world_size(), dist.get_rank()

    local_batch = job.local_batch_size(args.local_batch_size)
    accumulation = job.accumulation_steps()
    global_batch = local_batch * (accumulation + 1) * world
    x, y = dataset(args.seed, args.dataset_size, device)
    if job.checkpoints is not None:  # torch's own format, loaded onto this rank's device
        job.checkpoints = adaptsched.Checkpointer(job.checkpoints.directory, dump=torch.save,
                                                  load=lambda file: torch.load(file, map_location=device))

    torch.manual_seed(args.seed)  # same initial weights everywhere; DDP also broadcasts them
    model = torch.nn.Sequential(torch.nn.Linear(32, args.hidden), torch.nn.ReLU(),
                                torch.nn.Linear(args.hidden, 10)).to(device)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr)
    noise = GradientNoiseScale(ddp, local_batch, accumulation)
    adascale = AdaScaleLR(optimizer, noise, args.initial_batch_size, global_batch, fallback=job.lr_scale())

    step, samples = 0, 0
    resumed = job.load_latest()  # every rank loads the same file rank 0 wrote
    if resumed is not None:
        step, saved = resumed
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        noise.load_state_dict(saved["noise"])
        samples, adascale.progress = saved["samples"], saved["progress"]
    emit(rank, "start", step=step, resumed=resumed is not None, replicas=world, batch=global_batch)

    def state() -> dict:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "noise": noise.state_dict(),
                "samples": samples, "progress": adascale.progress}

    total = int(args.epochs * args.dataset_size)
    while samples < total:
        if stop_agreed(job.should_stop(), device):
            emit(rank, "stopped", step=step)
            job.exit_for_resize(step, state())  # rank 0 saves; every rank exits 0
        started = time.perf_counter()
        order = torch.randperm(args.dataset_size, generator=torch.Generator().manual_seed(args.seed + step))
        mine = order[:global_batch].view(world, accumulation + 1, local_batch)[rank]
        loss_sum = 0.0
        for k in range(accumulation + 1):
            last = k == accumulation
            indices = mine[k].to(device)
            with ddp.no_sync() if not last else contextlib.nullcontext():
                loss = F.cross_entropy(ddp(x[indices]), y[indices]) / (accumulation + 1)
                loss.backward()
            loss_sum += loss.item()
        grad_sqr, grad_var = noise.update()
        adascale.step()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step, samples = step + 1, samples + global_batch
        # Sync is overlapped with backward under DDP; it is not measured separately here.
        # The loss is rank 0's share of the batch, which is what rank 0 can see without a sync.
        job.report(step, global_batch, loss_sum, time.perf_counter() - started, None, grad_sqr, grad_var,
                   batch_size=global_batch)
        if step % args.log_every == 0:
            emit(rank, "step", step=step, loss=loss_sum, step_time=time.perf_counter() - started,
                 lr=optimizer.param_groups[0]["lr"],
                 grad_sqr=grad_sqr, grad_var=grad_var)
        if step % 200 == 0:
            job.save(step, state())
    job.save(step, state())
    emit(rank, "done", step=step, loss=loss_sum)
    job.flush()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
