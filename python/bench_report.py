#!/usr/bin/env python3
"""How much does ``adaptsched.report()`` cost a training loop? Prints a small table.

Two costs: the call itself (on the training thread) and the reporter thread's work
(serializing and posting batches), which competes with training for the GIL, so it counts
against the step too. Both are measured against a local metrics server, per step, and
compared with step times: the example MLP trainer's real step, and typical GPU steps.

    python3 python/bench_report.py [--steps 20000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, List, Tuple

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))

from adaptsched.reporter import Reporter  # noqa: E402


class _Sink(BaseHTTPRequestHandler):
    """Accepts metrics posts, like the server's handler minus the database."""

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = b'{"accepted":1}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


def busy(iterations: int) -> int:
    """Stand-in for the training thread's own work between reports (pure computation)."""
    return sum(i * i for i in range(iterations))


def measure_reports(steps: int) -> Tuple[List[float], float]:
    """Per-call seconds of report(), and the reporter thread's CPU seconds per step."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    reporter = Reporter(f"http://127.0.0.1:{server.server_address[1]}", 1, "token")
    reporter.report(0, 64, 1.0, 0.1)  # starts the thread
    clock = time.pthread_getcpuclockid(reporter._thread.ident)  # the reporter thread's CPU clock
    thread_cpu_before = time.clock_gettime(clock)
    durations = []
    for step in range(1, steps + 1):
        busy(200)
        started = time.perf_counter_ns()
        reporter.report(step, 64, 0.5, 0.01, 0.001, 0.2, 3.0, 64)
        durations.append((time.perf_counter_ns() - started) / 1e9)
    if not reporter.flush(30):
        raise SystemExit("the local server did not take the reports")
    thread_cpu = time.clock_gettime(clock) - thread_cpu_before
    server.shutdown()
    return durations, thread_cpu / steps


def trainer_step_seconds() -> float:
    """Median step of examples/mlp_trainer.py at its defaults (1 replica, batch 64)."""
    import mlp_trainer as trainer

    dims = (16, 32, 4)
    data = trainer.make_dataset(0, 2048, dims)
    replicas = trainer.Replicas(1, 0, 2048, dims, data)
    state = trainer.TrainState(params=trainer.init_params(0, dims))
    plan = trainer.Plan(replicas=1, local_batch=64, accumulation=0, lr=0.5)
    noise = trainer.GradientNoiseEstimator()
    times = [trainer.train_step(state, replicas, plan, 2048, 0, noise)[1] for _ in range(30)]
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20000)
    args = parser.parse_args()
    durations, background = measure_reports(args.steps)
    durations.sort()
    mean = statistics.fmean(durations)
    p99 = durations[int(0.99 * (len(durations) - 1))]
    per_step = mean + background
    print(f"report() over {args.steps} steps: mean {mean * 1e6:.2f} µs, p50 {statistics.median(durations) * 1e6:.2f} µs, "
          f"p99 {p99 * 1e6:.2f} µs, max {durations[-1] * 1e6:.1f} µs; "
          f"reporter thread {background * 1e6:.2f} µs CPU per step")
    print()
    print(f"{'step':<34} {'step time':>10} {'report() mean':>14} {'p99':>9} {'+thread':>9} {'overhead':>9}")
    rows = [("examples/mlp_trainer.py (measured)", trainer_step_seconds()),
            ("fast GPU step", 0.010), ("typical GPU step", 0.100), ("large-model step", 1.0)]
    for name, step in rows:
        print(f"{name:<34} {step * 1e3:>8.2f}ms {mean * 1e6:>12.2f}µs {p99 * 1e6:>7.2f}µs "
              f"{background * 1e6:>7.2f}µs {100 * per_step / step:>8.3f}%")


if __name__ == "__main__":
    main()
