"""
C{twistd tlsession} as an operator runs it (the real C{.venv/bin/twistd}):
every mistake in the command line, the configuration or at start-up ends
it with one line on standard error naming the problem and what to do, and
exit status 1, without the usage text or a traceback; C{--help} and
C{--version} answer.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import List, Sequence

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.integration._support import LOOPBACK, temporaryDirectory
from tlsuite import __version__

pytestmark = pytest.mark.integration

#: The twistd installed next to the interpreter running the tests.
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")

SECRET = b"correct horse battery staple\n"


class TwistdSessionErrorTests(SynchronousTestCase):
    """
    C{twistd -n tlsession} refuses what it cannot run with, in one line.
    """

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)
        self.secretFile = self.writeSecret("secret", 0o600)

    def writeSecret(self, name: str, mode: int) -> str:
        """
        A secret file in the test's directory, with C{mode}.
        """
        path = os.path.join(self.directory, name)
        with open(path, "wb") as f:
            f.write(SECRET)
        os.chmod(path, mode)
        return path

    def runTwistd(
        self, arguments: Sequence[str], twistdOptions: Sequence[str] = ("-n",)
    ) -> subprocess.CompletedProcess[str]:
        """
        Run C{twistd TWISTDOPTIONS tlsession ARGUMENTS} in the test's
        directory to completion.
        """
        return subprocess.run(
            [TWISTD, *twistdOptions, "tlsession", *arguments],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
        )

    def assertOneLineError(
        self, result: subprocess.CompletedProcess[str], expected: str
    ) -> None:
        """
        The run ended with exit status 1 and C{twistd tlsession: EXPECTED}
        as the only line of standard error, with no usage text or traceback
        anywhere.
        """
        described = (
            f"exit {result.returncode}\n--- stdout\n{result.stdout}\n"
            f"--- stderr\n{result.stderr}"
        )
        self.assertEqual(result.returncode, 1, described)
        self.assertEqual(
            result.stderr.splitlines(), [f"twistd tlsession: {expected}"], described
        )
        for noise in ["Usage:", "Traceback", "--secret-file="]:
            self.assertNotIn(noise, result.stdout + result.stderr, described)

    def test_badOptionValue(self) -> None:
        """
        A value its option cannot take is named.
        """
        result = self.runTwistd(
            [
                "--listen",
                "unix:daemon.sock",
                "--secret-file",
                self.secretFile,
                "--max-sessions",
                "lots",
            ]
        )
        self.assertOneLineError(
            result, "--max-sessions: expected an integer, got 'lots'"
        )

    def test_unknownOption(self) -> None:
        """
        An option that does not exist is named, pointing at C{--help}.
        """
        result = self.runTwistd(["--sessions", "unix:daemon.sock"])
        self.assertOneLineError(
            result,
            "option --sessions not recognized (twistd tlsession --help "
            "lists the options)",
        )

    def test_badSecretFile(self) -> None:
        """
        A secret file others can read is refused with the command that
        fixes it.
        """
        loose = self.writeSecret("loose", 0o644)
        result = self.runTwistd(
            ["--listen", "unix:daemon.sock", "--secret-file", loose]
        )
        self.assertOneLineError(
            result,
            f"{loose}: the secret file is accessible by its group or others "
            f"(mode 0644); make it private with: chmod 600 {loose}",
        )

    def test_missingSecretFile(self) -> None:
        """
        A secret file that is not there is named.
        """
        missing = os.path.join(self.directory, "absent")
        result = self.runTwistd(
            ["--listen", "unix:daemon.sock", "--secret-file", missing]
        )
        self.assertOneLineError(
            result, f"{missing}: cannot read the secret file: No such file or directory"
        )

    def test_badEndpoint(self) -> None:
        """
        An endpoint string Twisted cannot parse is named, with what one
        looks like.
        """
        result = self.runTwistd(
            ["--listen", "nope:1234", "--insecure", "--secret-file", self.secretFile]
        )
        self.assertOneLineError(
            result,
            "--listen: 'nope:1234' is not a valid server endpoint: Unknown "
            "endpoint type: 'nope' (a server endpoint string, e.g. "
            "unix:/run/tlsession/daemon.sock or "
            "ssl:7100:privateKey=key.pem:certKey=cert.pem)",
        )

    def test_portInUse(self) -> None:
        """
        A port another process holds is named, and so is the endpoint; the
        pid file twistd wrote is removed.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind((LOOPBACK, 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        endpoint = f"tcp:{port}:interface={LOOPBACK}"
        result = self.runTwistd(
            ["--listen", endpoint, "--insecure", "--secret-file", self.secretFile],
            twistdOptions=["-n", "--pidfile", "daemon.pid"],
        )
        self.assertOneLineError(
            result,
            f"the session daemon cannot listen on {endpoint}: the address is "
            "already in use: another process holds it (stop that process, or "
            "choose another address)",
        )
        self.assertFalse(os.path.exists(os.path.join(self.directory, "daemon.pid")))

    def test_version(self) -> None:
        """
        C{twistd tlsession --version} prints the suite's version.
        """
        result = self.runTwistd(["--version"], twistdOptions=())
        self.assertEqual(
            (result.returncode, result.stdout, result.stderr),
            (0, f"tlsession {__version__}\n", ""),
        )

    def test_help(self) -> None:
        """
        C{--help} still prints the usage text, naming every option.
        """
        result = self.runTwistd(["--help"], twistdOptions=())
        self.assertEqual(result.returncode, 0, result.stderr)
        lines: List[str] = result.stdout.splitlines()
        self.assertTrue(lines[0].startswith("Usage:"), result.stdout)
        for option in ["--listen", "--secret-file", "--insecure", "--version"]:
            self.assertIn(option, result.stdout)
