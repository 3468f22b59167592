"""The example trainer (examples/mlp_trainer.py): real gradients, real data parallelism,
loss going down, SIGTERM → checkpoint → exit 0, and resuming where it stopped."""

from __future__ import annotations

import json
import math
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import unittest
from unittest import mock
from pathlib import Path
from typing import Any, Dict, List, Optional

from adaptsched.checkpoint import Checkpointer
from tests.support import RecordingServer, wait_for

REPO = Path(__file__).resolve().parents[2]
TRAINER = REPO / "examples" / "mlp_trainer.py"
PYTHON_DIR = REPO / "python"
SMALL = ["--dataset-size", "512", "--inputs", "8", "--hidden", "12", "--classes", "3", "--log-every", "1"]


# Imported by name from sys.path (not from a file spec) because the spawn start method
# re-imports the module in each replica worker, and workers inherit the parent's sys.path.
sys.path.insert(0, str(TRAINER.parent))
import mlp_trainer as trainer  # noqa: E402


def trainer_env(**extra: str) -> Dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADAPTSCHED_")}
    env.update(PYTHONPATH=str(PYTHON_DIR), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


class TrainerProcess:
    """The trainer as a subprocess whose JSON-lines stdout is read as it comes."""

    def __init__(self, args: List[str], env: Dict[str, str]) -> None:
        # Its own session, so the test can signal the whole process group like an executor.
        self.proc = subprocess.Popen([sys.executable, str(TRAINER), *args], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.events: "queue.Queue[Dict[str, Any]]" = queue.Queue()
        self.seen: List[Dict[str, Any]] = []
        self.stderr = ""
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def _drain(self) -> None:
        while True:
            try:
                self.seen.append(self.events.get_nowait())
            except queue.Empty:
                return

    def wait_event(self, predicate: Any, timeout: float = 30.0) -> Dict[str, Any]:
        def found() -> Optional[Dict[str, Any]]:
            self._drain()
            return next((e for e in self.seen if predicate(e)), None)
        return wait_for(found, timeout, what="a trainer event")

    def finish(self, timeout: float = 30.0) -> int:
        code = self.proc.wait(timeout)
        self.reader.join(timeout)  # stdout reaches EOF once the process is gone
        self._drain()
        self.stderr = self.proc.stderr.read()
        return code

    def kill(self) -> None:
        """Cleanup for every path, a failed assertion included."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(5)
        self.proc.stdout.close()
        self.proc.stderr.close()

    def of(self, kind: str) -> List[Dict[str, Any]]:
        return [e for e in self.seen if e["event"] == kind]


class GradientTest(unittest.TestCase):
    def test_backprop_matches_finite_differences(self) -> None:
        dims = (3, 4, 3)
        xs, ys = trainer.make_dataset(5, 6, dims)
        params = trainer.init_params(5, dims)
        params = [p + 0.1 * random.Random(i).uniform(-1, 1) for i, p in enumerate(params)]  # nonzero biases
        indices = [0, 2, 3, 5]
        gradient, _ = trainer.batch_gradient(params, xs, ys, indices, dims)

        def loss(at: List[float]) -> float:
            return trainer.batch_gradient(at, xs, ys, indices, dims)[1] / len(indices)

        eps = 1e-6
        for i in range(len(params)):
            up, down = list(params), list(params)
            up[i] += eps
            down[i] -= eps
            self.assertAlmostEqual(gradient[i], (loss(up) - loss(down)) / (2 * eps), delta=1e-6)

    def test_replicas_average_to_the_full_batch_step(self) -> None:
        """Data parallelism must not change the math: K workers, same update as one process."""
        dims = (4, 6, 3)
        data = trainer.make_dataset(3, 64, dims)
        params = {}
        for count in (1, 2):
            replicas = trainer.Replicas(count, 3, 64, dims, data)
            try:
                state = trainer.TrainState(params=trainer.init_params(3, dims))
                plan = trainer.Plan(replicas=count, local_batch=16 // count, accumulation=1, lr=0.3)
                noise = trainer.GradientNoiseEstimator()
                for _ in range(3):
                    trainer.train_step(state, replicas, plan, 64, 3, noise)
                params[count] = state.params
                self.assertIsNotNone(noise.grad_var)
            finally:
                replicas.close()
        for a, b in zip(params[1], params[2]):
            self.assertAlmostEqual(a, b, places=12)


class PlanTest(unittest.TestCase):
    """Batch settings come from the environment when given, from the flags otherwise."""

    def plan(self, environ: Dict[str, str], *flags: str) -> Any:
        with mock.patch.dict(os.environ, environ, clear=True):
            return trainer.make_plan(trainer.parse_args(list(flags)), trainer.adaptsched.LaunchEnv.from_environ())

    def test_standalone_flags(self) -> None:
        plan = self.plan({}, "--replicas", "2", "--batch-size", "50", "--accumulation-steps", "1", "--lr-scale", "2")
        self.assertEqual((plan.replicas, plan.local_batch, plan.accumulation, plan.lr), (2, 13, 1, 1.0))
        self.assertEqual(plan.global_batch, 52)

    def test_environment_wins(self) -> None:
        plan = self.plan({"ADAPTSCHED_REPLICAS": "4", "ADAPTSCHED_LOCAL_BATCH_SIZE": "24", "ADAPTSCHED_BATCH_SIZE": "96",
                          "ADAPTSCHED_ACCUMULATION_STEPS": "0", "ADAPTSCHED_LR_SCALE": "1.5"},
                         "--replicas", "1", "--batch-size", "8", "--lr", "0.2")
        self.assertEqual((plan.replicas, plan.local_batch, plan.global_batch), (4, 24, 96))
        self.assertAlmostEqual(plan.lr, 0.3)

    def test_cpu_slots_and_a_global_batch_only(self) -> None:
        plan = self.plan({"ADAPTSCHED_CPU_SLOTS": "0,3", "ADAPTSCHED_BATCH_SIZE": "64"}, "--replicas", "5")
        self.assertEqual((plan.replicas, plan.local_batch), (2, 32))


class TrainingTest(unittest.TestCase):
    def test_loss_decreases_and_the_run_finishes(self) -> None:
        with tempfile.TemporaryDirectory() as directory:
            run = TrainerProcess([*SMALL, "--epochs", "4", "--batch-size", "32", "--checkpoint-dir", directory],
                                 trainer_env())
            try:
                self.assertEqual(run.finish(), 0, run.stderr)
            finally:
                run.kill()
            losses = [e["loss"] for e in run.of("step")]
            self.assertEqual(len(losses), 4 * 512 // 32)
            first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
            self.assertLess(last, 0.75 * first, losses)
            self.assertLess(last, math.log(3))  # better than guessing
            done = run.of("done")[0]
            self.assertEqual(done["reason"], "epochs")
            self.assertEqual(Checkpointer(directory).load_latest()[1]["done"], True)
            # Started again after finishing, it finishes at once rather than training on.
            again = TrainerProcess([*SMALL, "--epochs", "4", "--checkpoint-dir", directory], trainer_env())
            try:
                self.assertEqual(again.finish(), 0, again.stderr)
            finally:
                again.kill()
            self.assertEqual(again.of("done")[0]["reason"], "already-finished")

    def test_sigterm_checkpoints_exits_zero_and_the_restart_resumes(self) -> None:
        with tempfile.TemporaryDirectory() as directory, RecordingServer() as server:
            managed = dict(ADAPTSCHED_URL=server.url, ADAPTSCHED_JOB_ID="11", ADAPTSCHED_TOKEN="tok",
                           ADAPTSCHED_CHECKPOINT_DIR=directory)
            first = TrainerProcess([*SMALL, "--epochs", "1000"], trainer_env(
                ADAPTSCHED_REPLICAS="2", ADAPTSCHED_LOCAL_BATCH_SIZE="8", ADAPTSCHED_ACCUMULATION_STEPS="1",
                **managed))
            try:
                first.wait_event(lambda e: e["event"] == "step" and e["step"] >= 25)
                os.killpg(first.proc.pid, signal.SIGTERM)  # the whole group, workers included
                self.assertEqual(first.finish(), 0, first.stderr)
            finally:
                first.kill()
            stopped = first.of("stopped")[0]
            last_step = first.of("step")[-1]
            self.assertEqual(stopped["step"], last_step["step"])
            self.assertEqual(Checkpointer(directory).steps()[-1], stopped["step"])
            reported = server.steps()
            self.assertEqual([s["step"] for s in reported], list(range(1, stopped["step"] + 1)))
            self.assertTrue(all(s["batch_size"] == 32 and s["samples"] == 32 for s in reported))
            self.assertTrue(all(s["sync_time"] >= 0 and s["step_time"] > 0 for s in reported))
            self.assertIn("grad_var", reported[-1])

            # The scheduler resizes the job: one replica, a bigger local batch, a new lr scale.
            second = TrainerProcess([*SMALL, "--epochs", "1000", "--max-steps", str(stopped["step"] + 10)],
                                    trainer_env(ADAPTSCHED_REPLICAS="1", ADAPTSCHED_LOCAL_BATCH_SIZE="48",
                                                ADAPTSCHED_LR_SCALE="1.5", ADAPTSCHED_RESTARTS="1", **managed))
            try:
                self.assertEqual(second.finish(), 0, second.stderr)
            finally:
                second.kill()
            start = second.of("start")[0]
            self.assertEqual((start["resumed"], start["step"], start["batch"]), (True, stopped["step"], 48))
            resumed = second.of("step")
            self.assertEqual([e["step"] for e in resumed], list(range(stopped["step"] + 1, stopped["step"] + 11)))
            # The loss continues from where it was, far below where a fresh start begins.
            fresh = first.of("step")[0]["loss"]
            before = sum(e["loss"] for e in first.of("step")[-5:]) / 5
            after = sum(e["loss"] for e in resumed[:5]) / 5
            self.assertLess(after, fresh - 0.5 * (fresh - before), (fresh, before, after))
            steps = [s["step"] for s in server.steps()]
            self.assertEqual(steps, list(range(1, stopped["step"] + 11)))
            self.assertEqual(server.steps()[-1]["batch_size"], 48)


if __name__ == "__main__":
    unittest.main()
