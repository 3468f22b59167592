"""Step reports: JSON shape, batching, non-blocking, retries, bounded backlog, flush at exit."""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import textwrap
import threading
import time
import unittest
from pathlib import Path

from adaptsched.reporter import PostError, Reporter
from tests.support import RecordingServer, free_port, wait_for

PYTHON_DIR = Path(__file__).resolve().parent.parent


def fast_reporter(url: str, **overrides: object) -> Reporter:
    """Short intervals so retries happen within a test's time, not a trainer's."""
    options = dict(flush_interval=0.05, backoff_initial=0.02, backoff_max=0.2, timeout=2.0)
    options.update(overrides)
    return Reporter(url, 7, "tok", **options)  # type: ignore[arg-type]


class ReporterTest(unittest.TestCase):
    def test_posts_metrics_reports_with_bearer_token(self) -> None:
        with RecordingServer() as server:
            reporter = fast_reporter(server.url)
            reporter.report(1, 64, 2.5, 0.125, sync_time=0.01, grad_sqr=0.5, grad_var=3.0, batch_size=64)
            reporter.report(2, 64, 2.25, 0.125)
            self.assertTrue(reporter.flush(5))
            self.assertEqual(server.posts[0]["path"], "/v1/jobs/7/metrics")
            self.assertEqual(server.posts[0]["auth"], "Bearer tok")
            self.assertEqual(server.steps(), [
                {"step": 1, "samples": 64, "loss": 2.5, "step_time": 0.125, "sync_time": 0.01,
                 "grad_sqr": 0.5, "grad_var": 3.0, "batch_size": 64},
                # Absent optional fields are left out, never sent as null or NaN.
                {"step": 2, "samples": 64, "loss": 2.25, "step_time": 0.125},
            ])

    def test_batches_many_steps_into_few_posts_in_order(self) -> None:
        with RecordingServer() as server:
            reporter = fast_reporter(server.url, flush_interval=0.2, max_batch=400)
            for step in range(1, 1001):
                reporter.report(step, 32, 1.0 / step, 0.01)
            self.assertTrue(reporter.flush(10))
            self.assertEqual([s["step"] for s in server.steps()], list(range(1, 1001)))
            self.assertLessEqual(len(server.posts), 10)
            self.assertTrue(all(len(p["body"]["steps"]) <= 400 for p in server.posts))

    def test_report_returns_in_microseconds_while_the_server_is_stuck(self) -> None:
        with RecordingServer() as server:
            server.gate = threading.Event()  # every post hangs until the gate opens
            reporter = fast_reporter(server.url, max_batch=50)
            reporter.report(0, 1, 1.0, 0.01)
            wait_for(lambda: reporter.stats()["pending"] == 0, what="the first post to be in flight")
            durations = []
            for step in range(1, 2001):
                started = time.perf_counter()
                reporter.report(step, 32, 0.5, 0.01)
                durations.append(time.perf_counter() - started)
            self.assertEqual(server.posts, [])  # nothing got through, and yet we did not wait
            # Generous bounds for a loaded 2-core CI box; bench_report.py measures precisely.
            self.assertLess(statistics.median(durations), 50e-6)
            self.assertLess(sum(durations), 0.5)
            server.gate.set()
            self.assertTrue(reporter.flush(10))
            self.assertEqual([s["step"] for s in server.steps()], list(range(0, 2001)))

    def test_keeps_steps_while_the_server_is_down_and_delivers_them_later(self) -> None:
        port = free_port()
        reporter = fast_reporter(f"http://127.0.0.1:{port}")
        with self.assertLogs("adaptsched", "WARNING") as logs:
            for step in range(1, 51):
                reporter.report(step, 8, 1.0, 0.02)  # connection refused behind the scenes: no raise
            wait_for(lambda: reporter.stats()["failed_posts"] >= 2, what="failed posts")
        self.assertIn("will retry", logs.output[0])
        self.assertEqual(reporter.stats()["pending"], 50)
        self.assertFalse(reporter.flush(0.1))
        with RecordingServer(port) as server:
            for step in range(51, 61):
                reporter.report(step, 8, 1.0, 0.02)
            self.assertTrue(reporter.flush(10))
            self.assertEqual([s["step"] for s in server.steps()], list(range(1, 61)))

    def test_a_large_backlog_does_not_cut_the_backoff_short(self) -> None:
        posts = []

        def down(url: str, token: object, body: bytes, timeout: float) -> None:
            posts.append(len(body))
            raise PostError("connection refused", retryable=True)

        reporter = Reporter("http://unused", 1, post=down, max_batch=10, flush_interval=0.01,
                            backoff_initial=60.0, backoff_max=60.0)
        for step in range(10):
            reporter.report(step, 8, 1.0, 0.02)
        wait_for(lambda: reporter.stats()["failed_posts"] == 1, what="the first failed post")
        for step in range(10, 1000):
            reporter.report(step, 8, 1.0, 0.02)
        # A window for the retries that must not happen (a negative check needs one).
        threading.Event().wait(0.2)
        self.assertEqual(len(posts), 1)  # still backing off: no post per report
        self.assertEqual(reporter.stats()["pending"], 1000)
        reporter.close(0.05)  # or the exit-time flush would keep retrying for 5 s

    def test_retries_server_errors_and_drops_refused_batches(self) -> None:
        with RecordingServer() as server:
            server.statuses = [503, 500]
            reporter = fast_reporter(server.url)
            reporter.report(1, 8, 1.0, 0.02)
            self.assertTrue(reporter.flush(10))
            self.assertEqual([s["step"] for s in server.steps()], [1])
            server.statuses = [400]  # refused: resending the same body cannot help
            reporter.report(2, 8, 1.0, 0.02)
            self.assertTrue(reporter.flush(10))
            reporter.report(3, 8, 1.0, 0.02)
            self.assertTrue(reporter.flush(10))
            self.assertEqual([s["step"] for s in server.steps()], [1, 3])
            self.assertEqual(reporter.stats()["rejected"], 1)

    def test_bad_values_never_raise_and_never_poison_a_batch(self) -> None:
        with RecordingServer() as server:
            reporter = fast_reporter(server.url)
            reporter.report(1, 8, math.nan, 0.02)                 # unsendable: skipped
            reporter.report(2, 8, "not a number", 0.02)           # type: ignore[arg-type]
            reporter.report(3, 8, 0.5, 0.02, grad_sqr=math.inf)   # field left out
            self.assertTrue(reporter.flush(10))
            self.assertEqual(server.steps(), [{"step": 3, "samples": 8, "loss": 0.5, "step_time": 0.02}])

    def test_backlog_is_bounded_dropping_the_oldest(self) -> None:
        reporter = fast_reporter(f"http://127.0.0.1:{free_port()}", max_pending=10, max_batch=5)
        for step in range(1, 26):
            reporter.report(step, 8, 1.0, 0.02)
        wait_for(lambda: reporter.stats()["failed_posts"] >= 1, what="a failed post")
        stats = reporter.stats()
        self.assertEqual(stats["pending"] + stats["dropped"], 25)
        self.assertLessEqual(stats["pending"], 10)
        self.assertFalse(reporter.close(0.1))  # gives up quickly, and exit will not wait again

    def test_standalone_reports_go_nowhere(self) -> None:
        reporter = Reporter(None, None)
        reporter.report(1, 8, 1.0, 0.02)
        self.assertTrue(reporter.flush(0.1))
        self.assertEqual(reporter.stats()["queued"], 0)

    def test_steps_reported_just_before_exit_are_flushed(self) -> None:
        with RecordingServer() as server:
            script = textwrap.dedent("""
                import adaptsched
                for step in range(1, 51):
                    adaptsched.report(step, 16, 1.0 / step, 0.01)
            """)
            env = dict(os.environ, PYTHONPATH=str(PYTHON_DIR), ADAPTSCHED_URL=server.url,
                       ADAPTSCHED_JOB_ID="3", ADAPTSCHED_TOKEN="t")
            subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=30)
            self.assertEqual([s["step"] for s in server.steps()], list(range(1, 51)))
            self.assertEqual(server.posts[0]["path"], "/v1/jobs/3/metrics")


if __name__ == "__main__":
    unittest.main()
