"""SIGTERM handling inside one process: the flag, the second signal, the exit convention."""

from __future__ import annotations

import os
import signal
import time
import unittest
from typing import List

import adaptsched
from adaptsched.env import LaunchEnv
from adaptsched.lifecycle import EXIT_CHECKPOINTED, StopSignal, exit_for_resize
from tests.support import free_port, wait_for


class StopSignalTest(unittest.TestCase):
    def test_sigterm_sets_the_flag_instead_of_killing(self) -> None:
        stop = StopSignal()
        self.assertTrue(stop.install())
        try:
            self.assertFalse(stop.is_set())
            os.kill(os.getpid(), signal.SIGTERM)
            # Python runs handlers between bytecodes of the main thread: this is prompt.
            self.assertTrue(stop.is_set())
            self.assertEqual(stop.signal_number, signal.SIGTERM)
        finally:
            stop.uninstall()
        self.assertIs(signal.getsignal(signal.SIGTERM), signal.SIG_DFL)

    def test_second_sigterm_goes_to_the_previous_handler(self) -> None:
        seen: List[int] = []
        previous = signal.signal(signal.SIGTERM, lambda number, _frame: seen.append(number))
        stop = StopSignal()
        stop.install()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            self.assertEqual(seen, [])
            os.kill(os.getpid(), signal.SIGTERM)
            self.assertEqual(seen, [signal.SIGTERM])
        finally:
            signal.signal(signal.SIGTERM, previous)

    def test_exit_for_resize_saves_flushes_and_exits_zero(self) -> None:
        calls: List[str] = []
        with self.assertRaises(SystemExit) as caught:
            exit_for_resize(save=lambda: calls.append("save"), flush=lambda: calls.append("flush"))
        self.assertEqual(caught.exception.code, EXIT_CHECKPOINTED)
        self.assertEqual(EXIT_CHECKPOINTED, 0)
        self.assertEqual(calls, ["save", "flush"])

    def test_job_saves_only_on_the_writer_rank(self) -> None:
        import tempfile

        with tempfile.TemporaryDirectory() as directory:
            for rank, expected in ((1, None), (0, (3, "state"))):
                env = LaunchEnv.from_environ({"RANK": str(rank), "ADAPTSCHED_CHECKPOINT_DIR": directory})
                job = adaptsched.Job(env, install_signal_handler=False)
                with self.assertRaises(SystemExit):
                    job.exit_for_resize(3, "state")
                self.assertEqual(job.load_latest(), expected)

    def test_exit_with_the_server_down_waits_only_the_flush_timeout(self) -> None:
        env = LaunchEnv.from_environ({"ADAPTSCHED_URL": f"http://127.0.0.1:{free_port()}", "ADAPTSCHED_JOB_ID": "1"})
        job = adaptsched.Job(env, install_signal_handler=False)
        job.report(1, 8, 1.0, 0.1)
        started = time.monotonic()
        with self.assertRaises(SystemExit):
            job.exit_for_resize(flush_timeout=0.2)
        self.assertFalse(job.reporter.close(5.0))  # what exit runs again: already closed
        self.assertLess(time.monotonic() - started, 3.0)
        wait_for(lambda: job.reporter.stats()["pending"] == 1, what="the failed batch to be kept")


if __name__ == "__main__":
    unittest.main()
