"""Gradient noise estimator: known answers, unbiasedness on synthetic gradients, AdaScale gain."""

from __future__ import annotations

import math
import random
import unittest
from typing import List

from adaptsched.gns import GradientNoiseEstimator, adascale_gain, estimate, estimate_from_gradients, squared_norm


def sampled_mean_gradient(rng: random.Random, true: List[float], sigma: float, batch: int) -> List[float]:
    """A mean over ``batch`` per-sample gradients drawn from N(true, sigma² I)."""
    scale = sigma / math.sqrt(batch)  # the mean of b iid samples has variance sigma²/b
    return [g + rng.gauss(0.0, scale) for g in true]


class EstimatorTest(unittest.TestCase):
    def test_exact_when_norms_equal_their_expectations(self) -> None:
        # |G|² = 4, tr Σ = 48, b = 8, B = 32: E|g_b|² = 4 + 48/8 = 10, E|g_B|² = 4 + 48/32 = 5.5
        grad_sqr, grad_var = estimate(10.0, 8, 5.5, 32)
        self.assertAlmostEqual(grad_sqr, 4.0)
        self.assertAlmostEqual(grad_var, 48.0)

    def test_two_symmetric_gradients(self) -> None:
        # g = G ± d with b = 1 each: mean |g_b|² = |G|² + |d|², |g_B|² = |G|².
        grad_sqr, grad_var = estimate_from_gradients([[3.0, 1.0], [1.0, -1.0]], 1)
        g, d = [2.0, 0.0], [1.0, 1.0]
        self.assertAlmostEqual(grad_var, (squared_norm(d)) / (1.0 - 0.5))
        self.assertAlmostEqual(grad_sqr, (2 * squared_norm(g) - (squared_norm(g) + squared_norm(d))) / 1.0)

    def test_recovers_known_signal_and_noise_from_replica_gradients(self) -> None:
        rng = random.Random(1)
        true = [rng.uniform(-1, 1) for _ in range(20)]
        sigma, replicas, local = 2.0, 4, 8
        sqr_sum = var_sum = 0.0
        trials = 3000
        for _ in range(trials):
            grads = [sampled_mean_gradient(rng, true, sigma, local) for _ in range(replicas)]
            grad_sqr, grad_var = estimate_from_gradients(grads, local)
            sqr_sum += grad_sqr
            var_sum += grad_var
        self.assertAlmostEqual(sqr_sum / trials / squared_norm(true), 1.0, delta=0.05)
        self.assertAlmostEqual(var_sum / trials / (20 * sigma ** 2), 1.0, delta=0.05)

    def test_unequal_batch_sizes_stay_unbiased(self) -> None:
        rng = random.Random(2)
        true = [0.5] * 10
        sigma, sizes = 1.5, [4, 12, 8]
        totals = [0.0, 0.0]
        trials = 3000
        for _ in range(trials):
            grads = [sampled_mean_gradient(rng, true, sigma, b) for b in sizes]
            for i, value in enumerate(estimate_from_gradients(grads, sizes)):
                totals[i] += value
        self.assertAlmostEqual(totals[0] / trials / squared_norm(true), 1.0, delta=0.06)
        self.assertAlmostEqual(totals[1] / trials / (10 * sigma ** 2), 1.0, delta=0.06)

    def test_rejects_what_cannot_be_estimated(self) -> None:
        with self.assertRaises(ValueError):
            estimate_from_gradients([[1.0, 2.0]], 4)  # one batch size only
        with self.assertRaises(ValueError):
            estimate_from_gradients([[1.0], [1.0, 2.0]], 4)
        with self.assertRaises(ValueError):
            estimate_from_gradients([[1.0], [2.0]], [4])
        with self.assertRaises(ValueError):
            estimate(1.0, 8, 1.0, 8)


class SmoothingTest(unittest.TestCase):
    def test_first_update_is_taken_as_is_then_averaged(self) -> None:
        noise = GradientNoiseEstimator(smoothing=0.5)
        self.assertEqual(noise.reportable(), (None, None))
        noise.update(2.0, 10.0)
        self.assertAlmostEqual(noise.grad_sqr, 2.0)  # bias-corrected: no pull towards zero
        noise.update(4.0, 20.0)
        # (0.5·0.5·2 + 0.5·4) / (1 − 0.25) = 3.333…
        self.assertAlmostEqual(noise.grad_sqr, 10.0 / 3.0)
        self.assertAlmostEqual(noise.noise_scale(), 5.0)

    def test_reports_no_signal_rather_than_a_negative_square(self) -> None:
        noise = GradientNoiseEstimator()
        noise.update(-0.1, -2.0)
        self.assertEqual(noise.reportable(), (None, 0.0))
        noise.update(math.nan, 1.0)  # ignored
        self.assertAlmostEqual(noise.grad_sqr, -0.1)

    def test_state_round_trips(self) -> None:
        noise = GradientNoiseEstimator(0.8)
        noise.update(1.0, 3.0)
        copy = GradientNoiseEstimator()
        copy.load_state_dict(noise.state_dict())
        self.assertEqual((copy.grad_sqr, copy.grad_var, copy.smoothing), (noise.grad_sqr, noise.grad_var, 0.8))


class AdaScaleGainTest(unittest.TestCase):
    def test_gain_between_one_and_the_scale(self) -> None:
        self.assertAlmostEqual(adascale_gain(1.0, 5.0, 1.0), 1.0)
        self.assertAlmostEqual(adascale_gain(0.0, 5.0, 4.0), 4.0)   # pure noise: linear scaling
        self.assertAlmostEqual(adascale_gain(1.0, 0.0, 4.0), 1.0)   # no noise: nothing to gain
        self.assertAlmostEqual(adascale_gain(1.0, 3.0, 4.0), 4.0 / (0.75 + 1.0))


if __name__ == "__main__":
    unittest.main()
