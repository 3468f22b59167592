"""adaptsched.torch is optional: the core never imports torch, and without torch the helper
module fails with a message that says what to install."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import unittest
from pathlib import Path

PYTHON_DIR = Path(__file__).resolve().parent.parent


class TorchGuardTest(unittest.TestCase):
    def test_core_package_does_not_import_torch(self) -> None:
        code = "import sys, adaptsched, adaptsched.gns; assert 'torch' not in sys.modules, 'torch imported'"
        subprocess.run([sys.executable, "-c", code], cwd=PYTHON_DIR, check=True, timeout=30)

    @unittest.skipIf(importlib.util.find_spec("torch") is not None, "torch is installed here")
    def test_without_torch_the_helper_says_what_to_install(self) -> None:
        with self.assertRaises(ImportError) as caught:
            import adaptsched.torch  # noqa: F401
        self.assertIn("pip install torch", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
