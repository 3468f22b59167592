"""Checkpoints: atomic writes, resume from the latest, keep the last N."""

from __future__ import annotations

import os
import pickle
import tempfile
import unittest
from pathlib import Path
from typing import IO, Any

from adaptsched.checkpoint import Checkpointer


class CheckpointerTest(unittest.TestCase):
    def setUp(self) -> None:
        self._dir = tempfile.TemporaryDirectory()
        self.dir = Path(self._dir.name) / "ckpt"  # does not exist yet: save creates it

    def tearDown(self) -> None:
        self._dir.cleanup()

    def test_nothing_to_resume_from_an_empty_or_missing_dir(self) -> None:
        self.assertIsNone(Checkpointer(self.dir).load_latest())

    def test_resumes_from_the_latest_and_keeps_the_last_n(self) -> None:
        checkpoints = Checkpointer(self.dir, keep=2)
        for step in (10, 20, 30):
            checkpoints.save(step, {"weights": [step, step + 1]})
        self.assertEqual(checkpoints.steps(), [20, 30])
        self.assertEqual(checkpoints.load_latest(), (30, {"weights": [30, 31]}))
        self.assertEqual(sorted(os.listdir(self.dir)), ["ckpt-000000000020.pkl", "ckpt-000000000030.pkl"])

    def test_latest_is_by_step_not_by_write_order(self) -> None:
        checkpoints = Checkpointer(self.dir, keep=5)
        checkpoints.save(100, "late")
        checkpoints.save(9, "early")  # e.g. a rerun from scratch writing into an old dir
        self.assertEqual(checkpoints.load_latest(), (100, "late"))

    def test_a_failed_write_leaves_the_previous_checkpoint_and_no_temp_file(self) -> None:
        def dies_halfway(state: Any, file: IO[bytes]) -> None:
            file.write(pickle.dumps(state)[:5])
            raise OSError("disk full")

        Checkpointer(self.dir).save(1, {"ok": True})
        with self.assertRaises(OSError):
            Checkpointer(self.dir, dump=dies_halfway).save(2, {"ok": False})
        self.assertEqual(os.listdir(self.dir), ["ckpt-000000000001.pkl"])
        self.assertEqual(Checkpointer(self.dir).load_latest(), (1, {"ok": True}))

    def test_skips_a_torn_newest_file_and_cleans_stale_temp_files(self) -> None:
        checkpoints = Checkpointer(self.dir, keep=3)
        checkpoints.save(1, "good")
        # What a non-atomic writer killed mid-write would leave behind.
        checkpoints.path_for(2).write_bytes(pickle.dumps({"step": 2, "state": "x" * 100})[:20])
        (self.dir / ".tmp-ckpt-stale").write_bytes(b"partial")
        with self.assertLogs("adaptsched", "WARNING"):
            self.assertEqual(checkpoints.load_latest(), (1, "good"))
        checkpoints.save(3, "newer")
        self.assertNotIn(".tmp-ckpt-stale", os.listdir(self.dir))

    def test_custom_serializers(self) -> None:
        checkpoints = Checkpointer(self.dir, dump=lambda s, f: f.write(repr(s).encode()),
                                   load=lambda f: eval(f.read().decode()))  # noqa: S307 (test data)
        checkpoints.save(5, [1, 2])
        self.assertEqual(checkpoints.load_latest(), (5, [1, 2]))

    def test_rejects_nonsense(self) -> None:
        with self.assertRaises(ValueError):
            Checkpointer(self.dir, keep=0)
        with self.assertRaises(ValueError):
            Checkpointer(self.dir).save(-1, None)


if __name__ == "__main__":
    unittest.main()
