"""Launch-environment parsing (docs/protocol.md, adaptsched_api::env)."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import adaptsched
from adaptsched.env import LaunchEnv

FULL = {
    "ADAPTSCHED_JOB_ID": "42",
    "ADAPTSCHED_URL": "http://10.0.0.1:7400/",
    "ADAPTSCHED_TOKEN": "secret",
    "WORLD_SIZE": "4",
    "RANK": "3",
    "LOCAL_RANK": "1",
    "MASTER_ADDR": "10.0.0.2",
    "MASTER_PORT": "29500",
    "ADAPTSCHED_REPLICAS": "4",
    "ADAPTSCHED_NODES": "2",
    "ADAPTSCHED_BATCH_SIZE": "256",
    "ADAPTSCHED_LOCAL_BATCH_SIZE": "32",
    "ADAPTSCHED_ACCUMULATION_STEPS": "1",
    "ADAPTSCHED_LR_SCALE": "1.75",
    "ADAPTSCHED_CHECKPOINT_DIR": "/data/checkpoints/42",
    "ADAPTSCHED_RESTARTS": "2",
    "ADAPTSCHED_CPU_SLOTS": "0,1,2,3",
}


class LaunchEnvTest(unittest.TestCase):
    def test_reads_every_variable(self) -> None:
        env = LaunchEnv.from_environ(FULL)
        self.assertEqual(env.job_id, 42)
        self.assertEqual(env.url, "http://10.0.0.1:7400")  # trailing slash dropped
        self.assertEqual(env.token, "secret")
        self.assertEqual((env.world_size, env.rank, env.local_rank), (4, 3, 1))
        self.assertEqual((env.master_addr, env.master_port), ("10.0.0.2", 29500))
        self.assertEqual((env.replicas, env.nodes), (4, 2))
        self.assertEqual((env.batch_size, env.local_batch_size, env.accumulation_steps), (256, 32, 1))
        self.assertEqual(env.lr_scale, 1.75)
        self.assertEqual(env.checkpoint_dir, "/data/checkpoints/42")
        self.assertEqual(env.restarts, 2)
        self.assertEqual(env.cpu_slots, (0, 1, 2, 3))
        self.assertTrue(env.managed)
        self.assertFalse(env.is_writer)

    def test_standalone_defaults(self) -> None:
        env = LaunchEnv.from_environ({})
        self.assertFalse(env.managed)
        self.assertEqual((env.replicas, env.world_size, env.rank), (1, 1, 0))
        self.assertEqual((env.batch_size, env.local_batch_size, env.accumulation_steps), (None, None, 0))
        self.assertEqual(env.lr_scale, 1.0)
        self.assertIsNone(env.checkpoint_dir)

    def test_blank_values_count_as_unset(self) -> None:
        env = LaunchEnv.from_environ({"ADAPTSCHED_URL": "", "ADAPTSCHED_BATCH_SIZE": "  "})
        self.assertIsNone(env.url)
        self.assertIsNone(env.batch_size)

    def test_fills_in_the_missing_batch_size(self) -> None:
        from_local = LaunchEnv.from_environ(
            {"ADAPTSCHED_REPLICAS": "3", "ADAPTSCHED_LOCAL_BATCH_SIZE": "10", "ADAPTSCHED_ACCUMULATION_STEPS": "1"})
        self.assertEqual(from_local.batch_size, 60)  # 10 × (1 + 1) × 3
        from_global = LaunchEnv.from_environ({"ADAPTSCHED_REPLICAS": "3", "ADAPTSCHED_BATCH_SIZE": "100"})
        self.assertEqual(from_global.local_batch_size, 34)  # rounded up, never fewer samples

    def test_replicas_fall_back_to_slots_then_world_size(self) -> None:
        self.assertEqual(LaunchEnv.from_environ({"ADAPTSCHED_CPU_SLOTS": "4,5"}).replicas, 2)
        self.assertEqual(LaunchEnv.from_environ({"WORLD_SIZE": "8"}).replicas, 8)

    def test_malformed_values_name_the_variable(self) -> None:
        cases = {
            "ADAPTSCHED_BATCH_SIZE": "lots",
            "ADAPTSCHED_LOCAL_BATCH_SIZE": "0",
            "RANK": "-1",
            "ADAPTSCHED_LR_SCALE": "nan",
            "ADAPTSCHED_CPU_SLOTS": "0,x",
            "ADAPTSCHED_JOB_ID": "job-7",
        }
        for name, value in cases.items():
            with self.subTest(name=name):
                with self.assertRaises(ValueError) as caught:
                    LaunchEnv.from_environ({name: value})
                self.assertIn(name, str(caught.exception))
                self.assertIn(repr(value), str(caught.exception))

    def test_server_address_and_checkpoints_from_the_data_dir(self) -> None:
        with tempfile.TemporaryDirectory() as data_dir:
            Path(data_dir, "server.url").write_text("http://127.0.0.1:7400\n")
            Path(data_dir, "token").write_text("t0ken\n")
            env = LaunchEnv.from_environ({"ADAPTSCHED_DATA_DIR": data_dir, "ADAPTSCHED_JOB_ID": "9"})
            self.assertEqual((env.url, env.token), ("http://127.0.0.1:7400", "t0ken"))
            self.assertEqual(env.checkpoint_dir, str(Path(data_dir, "checkpoints", "9")))

    def test_job_getters_prefer_the_environment_over_defaults(self) -> None:
        managed = adaptsched.Job(LaunchEnv.from_environ(FULL), install_signal_handler=False)
        self.assertEqual(managed.batch_size(64), 256)
        self.assertEqual(managed.local_batch_size(8), 32)
        self.assertEqual((managed.accumulation_steps(), managed.lr_scale(), managed.replicas()), (1, 1.75, 4))
        standalone = adaptsched.Job(LaunchEnv.from_environ({}), install_signal_handler=False)
        self.assertEqual((standalone.batch_size(64), standalone.local_batch_size(8)), (64, 8))


if __name__ == "__main__":
    unittest.main()
