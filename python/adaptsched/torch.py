"""PyTorch helpers: gradient noise statistics across DDP replicas, AdaScale learning rates.

Import only where torch is installed (``pip install adaptsched[torch]``); the rest of the
package never imports this module.

``GradientNoiseScale`` registers a DistributedDataParallel communication hook. DDP hands the
hook each gradient bucket *before* the all-reduce, i.e. this replica's own gradient g_b over
its b = local batch × (accumulation steps + 1) samples; the hook adds the bucket's squared
norm and then all-reduces as DDP would. After ``backward`` the ``.grad`` fields hold the
average g_B over B = b × world size samples. Those two norms give |G|² and tr Σ
(``adaptsched.gns.estimate``). ``AdaScaleLR`` turns them into the AdaScale gain.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, List, Optional, Tuple

try:
    import torch
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
except ImportError as error:  # keep the message actionable; the core package needs no torch
    raise ImportError("adaptsched.torch needs PyTorch: pip install torch (adaptsched itself does not)") from error

from .gns import GradientNoiseEstimator, adascale_gain, estimate


class GradientNoiseScale:
    """Per-step grad_sqr/grad_var of a DDP model, smoothed.

    Create it before the first ``backward`` (DDP takes hooks only then). Divide each
    micro-batch's loss by ``accumulation_steps + 1`` (the usual practice) so the gradient is
    a mean over samples, and run the extra micro-batches under ``model.no_sync()``. Call
    ``update()`` after the last ``backward`` of a step and before ``optimizer.zero_grad()``;
    with a GradScaler, call ``update(loss_scale=scaler.get_scale())`` before
    ``scaler.unscale_``/``scaler.step``, while both norms are still scaled. With one replica
    there is no second batch size to compare, so ``update`` returns (None, None).
    """

    def __init__(self, ddp_model: torch.nn.parallel.DistributedDataParallel, local_batch_size: int,
                 accumulation_steps: int = 0, smoothing: float = 0.9,
                 process_group: Optional[Any] = None) -> None:
        self.model = ddp_model
        self.small_batch = local_batch_size * (accumulation_steps + 1)
        self.process_group = process_group
        self.world_size = dist.get_world_size(process_group) if dist.is_initialized() else 1
        self.estimator = GradientNoiseEstimator(smoothing)
        self._local_sqr: Optional[torch.Tensor] = None
        if self.world_size > 1:
            ddp_model.register_comm_hook(process_group, self._hook)

    # Unannotated on purpose: DDP rejects a hook whose annotations are not exactly
    # dist.GradBucket and Future[Tensor], and `from __future__ import annotations` turns
    # them into strings.
    def _hook(self, process_group, bucket):  # type: ignore[no-untyped-def]
        buffer = bucket.buffer()
        # Accumulate on the device: no host sync inside backward.
        norm = buffer.detach().float().pow(2).sum()
        self._local_sqr = norm if self._local_sqr is None else self._local_sqr + norm
        return default_hooks.allreduce_hook(process_group, bucket)

    def update(self, loss_scale: float = 1.0) -> Tuple[Optional[float], Optional[float]]:
        """Folds this step into the averages; returns what to report (``reportable()``)."""
        if self.world_size < 2 or self._local_sqr is None:
            return None, None
        small = self._local_sqr.clone()
        self._local_sqr = None
        dist.all_reduce(small, group=self.process_group)  # sum of |g_b|² over replicas
        large = sum(p.grad.detach().float().pow(2).sum() for p in _grads(self.model.parameters()))
        unscale = loss_scale * loss_scale
        small_sqr = small.item() / self.world_size / unscale  # one host sync per norm, not per tensor
        large_sqr = float(large) / unscale
        self.estimator.update(*estimate(small_sqr, self.small_batch, large_sqr, self.small_batch * self.world_size))
        return self.estimator.reportable()

    def reportable(self) -> Tuple[Optional[float], Optional[float]]:
        return self.estimator.reportable()

    def state_dict(self) -> dict:
        return self.estimator.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.estimator.load_state_dict(state)


def _grads(parameters: Iterable[torch.nn.Parameter]) -> List[torch.nn.Parameter]:
    return [p for p in parameters if p.grad is not None]


class AdaScaleLR:
    """Sets each param group's lr to base lr × AdaScale gain at scale S = batch / initial batch.

    The gain comes from the measured statistics; until there are any, from ``fallback`` (pass
    ``adaptsched.lr_scale()``: the scheduler's gain for this batch size from the reports so far).
    Adam-like optimizers get √gain (``adam=True``). ``progress`` counts steps of the initial
    batch size (scale-invariant iterations): use it, not the step count, for lr schedules.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, noise: GradientNoiseScale, initial_batch_size: int,
                 batch_size: int, adam: bool = False, fallback: float = 1.0) -> None:
        self.optimizer = optimizer
        self.noise = noise
        self.scale = batch_size / initial_batch_size
        self.adam = adam
        self.fallback = fallback
        self.base_lrs = [group["lr"] for group in optimizer.param_groups]
        self.progress = 0.0

    def step(self) -> float:
        """Call right before ``optimizer.step()``; returns the lr multiplier it applied."""
        sqr, var = self.noise.reportable()
        gain = self.fallback if sqr is None or var is None else adascale_gain(sqr, var, self.scale)
        multiplier = math.sqrt(gain) if self.adam else gain
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * multiplier
        self.progress += gain
        return multiplier


def stop_agreed(stop: bool, device: torch.device, process_group: Optional[Any] = None) -> bool:
    """True on every rank when any rank has been asked to stop (pass ``job.should_stop()``).

    SIGTERM reaches the ranks at slightly different times; a rank that stops one step early
    would leave the others blocked in their next all-reduce until SIGKILL. One tiny
    all-reduce per step keeps them stopping at the same step.
    """
    flag = torch.tensor([1 if stop else 0], dtype=torch.int32, device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=process_group)
    return bool(flag.item())
