"""Tests of the adaptsched Python client and the example trainer.

Run from the repository root: ``python3 -m unittest discover -s python/tests -t python``.
"""

import logging

# Several tests provoke warnings on purpose (a server that is down); keep them off the
# console. Tests that expect a warning check it with assertLogs, which still sees it.
logging.getLogger("adaptsched").addHandler(logging.NullHandler())
logging.getLogger("adaptsched").propagate = False
