"""
Tests for C{twistd tlbalance --check-config} and for the reload that
L{tlbalance.tap.makeService} installs when the balancer has a
configuration file.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from io import StringIO
from unittest import mock

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tlbalance.reload import SIGHUPReload
from tlbalance.runtime import RuntimeChangeError
from tlbalance.service import BalancerService
from tlbalance.tap import Options, makeService

GOOD = (
    'listen = ["tcp:0:interface=127.0.0.1"]\n'
    "retries = 2\n"
    "[[backend]]\n"
    'endpoint = "127.0.0.1:8081"\n'
    'name = "a"\n'
)


class ConfigFileTestCase(SynchronousTestCase):
    """
    Writes configuration files in a directory removed after the test.
    """

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="tlbalance-reload-")
        self.addCleanup(shutil.rmtree, self.directory)
        self.path = os.path.join(self.directory, "tlbalance.toml")

    def write(self, text: str) -> str:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)
        return self.path


class CheckConfigTests(ConfigFileTestCase):
    """
    C{--check-config} checks without starting and exits 0 or 1.
    """

    def check(self, *arguments: str) -> tuple[object, str]:
        out = StringIO()
        with mock.patch("sys.stdout", out):
            error = self.assertRaises(
                SystemExit, Options().parseOptions, ["--check-config", *arguments]
            )
        return error.code, out.getvalue()

    def test_good(self) -> None:
        """
        A good configuration: status 0 and a summary.
        """
        code, out = self.check("--config", self.write(GOOD))
        self.assertEqual(code, 0)
        self.assertEqual(
            out, "configuration OK: 1 listener(s), 1 backend(s), roundrobin\n"
        )

    def test_everyProblem(self) -> None:
        """
        A bad configuration: every problem, one line each, and status 1
        (a message for C{SystemExit}).
        """
        self.write(
            'algorithm = "fastest"\n'
            + 'listen = ["ssl:0:privateKey=/nonexistent/key.pem"]\n'
            + GOOD.replace("retries = 2", "retries = -1").split("\n", 1)[1]
        )
        code, out = self.check("--config", self.path)
        self.assertEqual(out, "")
        self.assertIsInstance(code, str)
        lines = str(code).splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertTrue(all(line.startswith("twistd tlbalance: ") for line in lines))
        joined = "\n".join(lines)
        for word in ("algorithm", "retries", "/nonexistent/key.pem"):
            self.assertIn(word, joined)

    def test_commandLine(self) -> None:
        """
        Flags are checked with the file, as at start-up.
        """
        code, _ = self.check("--config", self.write(GOOD), "--retries", "99")
        self.assertIn("retries", str(code))


class TapReloadTests(ConfigFileTestCase):
    """
    A balancer started with C{--config} reloads its file; flags given on
    the command line stay in force over it.
    """

    def test_reloadKeepsFlags(self) -> None:
        """
        The reload reads the file again, and the command line's settings
        still win over it.
        """
        options = Options()
        options.parseOptions(["--config", self.write(GOOD), "--retries", "1"])
        service = makeService(options, MemoryReactorClock())
        assert isinstance(service, BalancerService)
        self.assertTrue([s for s in service if isinstance(s, SIGHUPReload)])
        self.write(
            GOOD.replace("retries = 2", "retries = 5\nclient-timeout = 9")
            + '[[backend]]\nendpoint = "127.0.0.1:8082"\nname = "b"\n'
        )
        lines = service.runtime.reload("uid 0")
        self.assertEqual(
            lines,
            ["server b added (tcp:host=127.0.0.1:port=8082)", "client-timeout changed"],
        )
        self.assertEqual(service.config.retries, 1)

    def test_stopRestoresSIGHUP(self) -> None:
        """
        Stopping the balancer puts SIGHUP's previous handler back, and a
        reload asked during the drain is refused.
        """
        options = Options()
        options.parseOptions(["--config", self.write(GOOD)])
        service = makeService(options, MemoryReactorClock())
        assert isinstance(service, BalancerService)
        before = signal.getsignal(signal.SIGHUP)
        service.startService()
        self.assertNotEqual(signal.getsignal(signal.SIGHUP), before)
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
        with self.assertRaises(RuntimeChangeError) as raised:
            service.runtime.reload("uid 0")
        self.assertIn("the balancer is stopping", str(raised.exception))

    def test_noFileNoReload(self) -> None:
        """
        Without a file there is nothing to reload, and SIGHUP is left alone.
        """
        options = Options()
        options.parseOptions(["--listen", "tcp:0", "--backend", "127.0.0.1:1"])
        service = makeService(options, MemoryReactorClock())
        assert isinstance(service, BalancerService)
        self.assertIsNone(service.runtime.reloader)
        self.assertEqual([s for s in service if isinstance(s, SIGHUPReload)], [])
