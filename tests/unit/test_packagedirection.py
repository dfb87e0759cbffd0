"""
tlbalance does not depend on tlsession or tlcache: importing any of its
modules, the twistd plugin's included, and building a balancer loads
neither; only C{twistd tlbalance --sessions} brings tlsession in, to host
its daemon.

Each check runs in a fresh interpreter, since this one has imported
everything already.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from typing import List

from twisted.trial.unittest import SynchronousTestCase

# Imports every tlbalance module, then parses twistd tlbalance's options
# (sys.argv[1:]) and builds the service in a memory reactor; prints the
# tlsession and tlcache modules loaded.
_PROGRAM = """
import importlib, json, pkgutil, sys
import tlbalance
for module in pkgutil.iter_modules(tlbalance.__path__):
    importlib.import_module("tlbalance." + module.name)
from twisted.internet.testing import MemoryReactorClock
from tlbalance.tap import Options, makeService
options = Options()
options.parseOptions(sys.argv[1:])
makeService(options, MemoryReactorClock())
print(json.dumps(sorted(
    name for name in sys.modules if name.split(".")[0] in ("tlsession", "tlcache")
)))
"""

REQUIRED = ["--listen", "tcp:8080", "--backend", "127.0.0.1:8081"]


class TlbalanceImportsTests(SynchronousTestCase):
    """
    What importing and running tlbalance loads.
    """

    def loadedBy(self, *arguments: str) -> List[str]:
        """
        The tlsession and tlcache modules a fresh interpreter has loaded
        after importing every tlbalance module and building the service
        for C{twistd tlbalance ARGUMENTS}.
        """
        checkout = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
        result = subprocess.run(
            [sys.executable, "-c", _PROGRAM, *arguments],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=120,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        loaded: List[str] = json.loads(result.stdout.splitlines()[-1])
        return loaded

    def test_withoutSessions(self) -> None:
        """
        Every tlbalance module, and a balancer built by the tap, load no
        tlsession or tlcache module.
        """
        self.assertEqual(self.loadedBy(*REQUIRED), [])

    def test_withSessions(self) -> None:
        """
        With C{--sessions}, the tap imports tlsession to host its daemon
        (and still no tlcache).
        """
        directory = tempfile.mkdtemp(prefix="tlbalance-test-")
        self.addCleanup(shutil.rmtree, directory)
        secret = os.path.join(directory, "secret")
        with open(secret, "w") as f:
            f.write("a-secret-of-enough-length\n")
        os.chmod(secret, 0o600)
        loaded = self.loadedBy(
            *REQUIRED,
            "--sessions",
            f"unix:{os.path.join(directory, 'sessions.sock')}",
            "--secret-file",
            secret,
        )
        self.assertIn("tlsession.daemonconfig", loaded)
        self.assertEqual([name for name in loaded if name.startswith("tlcache")], [])
