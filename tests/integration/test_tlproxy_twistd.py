"""
A bad C{tlproxy:} endpoint string given to a twistd plugin that is not the
suite's own (C{twistd -n web --listen}), as an operator would: twistd web
prints the traceback of any error building its service, so what the
C{tlproxy:} parser controls is the exception at the end of it, which must
be one, with one line saying what is wrong and what is expected.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.integration._support import temporaryDirectory

pytestmark = pytest.mark.integration

#: The twistd installed next to the interpreter running the tests.
TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class TwistdWebTLProxyErrorTests(SynchronousTestCase):
    """
    C{twistd -n web --listen tlproxy:...} with a mistake in the string.
    """

    def setUp(self) -> None:
        self.directory = temporaryDirectory(self)

    def errorOf(self, description: str) -> str:
        """
        Run C{twistd -n web --listen DESCRIPTION} to completion and return
        the last line of its standard error, after checking that it failed
        with a single exception (no chained one) and listened on nothing.
        """
        result = subprocess.run(
            [TWISTD, "-n", "web", "--listen", description, "--path", self.directory],
            cwd=self.directory,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
        )
        described = (
            f"exit {result.returncode}\n--- stdout\n{result.stdout}\n"
            f"--- stderr\n{result.stderr}"
        )
        self.assertEqual(result.returncode, 1, described)
        self.assertEqual(result.stdout, "", described)
        lines: List[str] = result.stderr.splitlines()
        self.assertEqual(result.stderr.count("Traceback"), 1, described)
        for chained in ["During handling of the above", "direct cause"]:
            self.assertNotIn(chained, result.stderr, described)
        return lines[-1]

    def test_badTrustedNetwork(self) -> None:
        """
        A C{trusted=} entry that is no network is named, with what is
        expected instead.
        """
        self.assertEqual(
            self.errorOf("tlproxy:trusted=10.0.0.300/8:tcp:0"),
            "ValueError: tlproxy: trusted peer '10.0.0.300/8' is not an IP "
            "address, a CIDR network or 'unix': '10.0.0.300/8' does not appear "
            "to be an IPv4 or IPv6 network",
        )

    def test_unescapedIPv6(self) -> None:
        """
        An IPv6 network with bare colons gets the hint to escape them.
        """
        self.assertEqual(
            self.errorOf("tlproxy:trusted=fd00::/8:tcp:0"),
            "ValueError: tlproxy: trusted peer 'fd00' is not an IP address, a "
            "CIDR network or 'unix': 'fd00' does not appear to be an IPv4 or "
            r"IPv6 network (IPv6 colons must be escaped, as in trusted=\:\:1)",
        )

    def test_badInnerEndpoint(self) -> None:
        """
        An inner endpoint that cannot be built is named, with the reason.
        """
        self.assertEqual(
            self.errorOf("tlproxy:trusted=127.0.0.1:tcp:https"),
            "ValueError: tlproxy: cannot listen on 'tcp:https': invalid literal "
            "for int() with base 10: 'https'",
        )
