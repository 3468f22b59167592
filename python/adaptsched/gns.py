"""Gradient noise statistics in pure Python: |G|² (grad_sqr) and tr Σ (grad_var).

The scheduler's statistical-efficiency model (ARCHITECTURE §3; Pollux, AdaScale) needs the
squared norm of the true gradient G and the trace of the per-sample gradient covariance Σ.
Neither is observable, but a gradient averaged over b samples satisfies
E|g_b|² = |G|² + tr Σ / b, so norms at two batch sizes b < B give both unknowns:

    |G|² ≈ (B|g_B|² − b|g_b|²) / (B − b)        tr Σ ≈ (|g_b|² − |g_B|²) / (1/b − 1/B)

Data parallelism provides the two sizes for free: each replica's (or micro-batch's)
gradient is a small-batch one and their average is the large-batch one. Single-step
estimates are noisy and may be negative, so ``GradientNoiseEstimator`` keeps a bias-corrected
exponential moving average of each, as Pollux does.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Sequence, Tuple, Union


def squared_norm(vector: Sequence[float]) -> float:
    return sum(x * x for x in vector)


def estimate(small_sqr: float, small_batch: float, large_sqr: float, large_batch: float) -> Tuple[float, float]:
    """``(grad_sqr, grad_var)`` from mean |g_b|² at batch b and |g_B|² at batch B > b."""
    if not 0 < small_batch < large_batch:
        raise ValueError(f"need 0 < small batch < large batch, got {small_batch} and {large_batch}")
    grad_sqr = (large_batch * large_sqr - small_batch * small_sqr) / (large_batch - small_batch)
    grad_var = (small_sqr - large_sqr) / (1.0 / small_batch - 1.0 / large_batch)
    return grad_sqr, grad_var


def estimate_from_gradients(
    gradients: Sequence[Sequence[float]], batch_sizes: Union[int, Sequence[int]]
) -> Tuple[float, float]:
    """``(grad_sqr, grad_var)`` from per-replica (or per-micro-batch) mean gradients.

    ``batch_sizes`` is each gradient's sample count (one int when all are equal). The large
    batch gradient is their sample-weighted average; with unequal sizes the small batch is
    their harmonic mean, which keeps E[mean |g_i|²] = |G|² + tr Σ / b exact.
    """
    count = len(gradients)
    if count < 2:
        raise ValueError(f"need at least 2 gradients, got {count}")
    sizes = [batch_sizes] * count if isinstance(batch_sizes, int) else list(batch_sizes)
    if len(sizes) != count or min(sizes) <= 0:
        raise ValueError(f"need one positive batch size per gradient, got {sizes}")
    total = sum(sizes)
    dim = len(gradients[0])
    large = [0.0] * dim
    for gradient, size in zip(gradients, sizes):
        if len(gradient) != dim:
            raise ValueError(f"gradients differ in length: {dim} and {len(gradient)}")
        weight = size / total
        large = [acc + weight * g for acc, g in zip(large, gradient)]
    small_sqr = sum(squared_norm(g) for g in gradients) / count
    small_batch = count / sum(1.0 / size for size in sizes)
    return estimate(small_sqr, small_batch, squared_norm(large), total)


def adascale_gain(grad_sqr: float, grad_var: float, scale: float) -> float:
    """AdaScale gain r = (σ² + μ²)/(σ²/S + μ²) for batch scale S = M/M0: the learning-rate
    multiplier (√r for Adam-like optimizers) and the M0-steps of progress one step makes."""
    if scale <= 0:
        raise ValueError(f"scale: expected > 0, got {scale}")
    var = max(grad_var, 0.0)
    sqr = max(grad_sqr, 0.0)
    if var + sqr == 0.0:
        return 1.0
    return (var + sqr) / (var / scale + sqr)


class GradientNoiseEstimator:
    """Bias-corrected exponential moving averages of grad_sqr and grad_var."""

    def __init__(self, smoothing: float = 0.9) -> None:
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing: expected in [0, 1), got {smoothing}")
        self.smoothing = smoothing
        self._sqr = 0.0
        self._var = 0.0
        self._weight = 0.0  # 1 − smoothing^n: corrects the zero start of the averages

    def update(self, grad_sqr: float, grad_var: float) -> None:
        if not (math.isfinite(grad_sqr) and math.isfinite(grad_var)):
            return  # one overflowed step must not poison the average forever
        keep = self.smoothing
        self._sqr = keep * self._sqr + (1 - keep) * grad_sqr
        self._var = keep * self._var + (1 - keep) * grad_var
        self._weight = keep * self._weight + (1 - keep)

    def update_from_gradients(self, gradients: Sequence[Sequence[float]],
                              batch_sizes: Union[int, Sequence[int]]) -> None:
        self.update(*estimate_from_gradients(gradients, batch_sizes))

    @property
    def grad_sqr(self) -> Optional[float]:
        return self._sqr / self._weight if self._weight > 0 else None

    @property
    def grad_var(self) -> Optional[float]:
        return self._var / self._weight if self._weight > 0 else None

    def reportable(self) -> Tuple[Optional[float], Optional[float]]:
        """What to send the server: a non-positive |G|² says "no signal yet", so it is left
        out (the noise scale grad_var/grad_sqr would be meaningless); tr Σ is floored at 0."""
        sqr, var = self.grad_sqr, self.grad_var
        if sqr is None or var is None:
            return None, None
        return (sqr if sqr > 0 else None), max(var, 0.0)

    def noise_scale(self) -> Optional[float]:
        """B_noise = tr Σ / |G|², the batch size where noise and signal are equal."""
        sqr, var = self.reportable()
        return None if sqr is None or var is None else var / sqr

    def state_dict(self) -> Dict[str, float]:
        return {"smoothing": self.smoothing, "sqr": self._sqr, "var": self._var, "weight": self._weight}

    def load_state_dict(self, state: Dict[str, float]) -> None:
        self.smoothing = float(state["smoothing"])
        self._sqr, self._var, self._weight = float(state["sqr"]), float(state["var"]), float(state["weight"])
