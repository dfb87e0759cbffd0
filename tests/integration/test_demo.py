"""
C{make demo} works: the demo script's balancer answers over HTTP and HTTPS
from both backends, each reporting the real client address, and everything
stops cleanly on SIGTERM.
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from tests.integration._support import accepts, freePort, temporaryDirectory

ROOT = Path(__file__).resolve().parents[2]


class DemoTests(SynchronousTestCase):
    """
    The demo, run as C{make demo} runs it, on free ports.
    """

    def fetch(self, url: str) -> str:
        """
        GET C{url}, trusting the demo's self-signed certificate.
        """
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with urllib.request.urlopen(url, timeout=10, context=context) as response:
            return response.read().decode("utf-8")

    def waitFor(self, port: int, demo: subprocess.Popen[bytes]) -> None:
        """
        Wait until C{port} accepts connections (at most 30 s).
        """
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.assertIsNone(demo.poll(), "the demo exited early")
            if accepts(("127.0.0.1", port)):
                return
            time.sleep(0.2)
        self.fail(f"nothing listened on port {port}")

    def test_demo(self) -> None:
        """
        Both backends answer through both listeners with the client's own
        address, and SIGTERM stops the demo and all its processes.
        """
        run = Path(temporaryDirectory(self)) / "run"
        http, https, backend = freePort(), freePort(), freePort()
        environment = dict(
            os.environ,
            TLSUITE_DEMO_RUN=str(run),
            TLSUITE_DEMO_HTTP=str(http),
            TLSUITE_DEMO_HTTPS=str(https),
            TLSUITE_DEMO_BACKEND=str(backend),
        )
        demo = subprocess.Popen(
            [sys.executable, "examples/demo/run.py"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def killAll() -> None:
            if demo.poll() is None:
                os.killpg(demo.pid, signal.SIGKILL)
                demo.wait()

        self.addCleanup(killAll)
        for port in (http, https, backend):
            self.waitFor(port, demo)

        seen = set()
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            # Backend B is used once its health check has passed.
            line = self.fetch(f"http://127.0.0.1:{http}/?format=text").strip()
            name, client = line.split(" client=")
            self.assertTrue(client.startswith("127.0.0.1:"), line)
            seen.add(name.split()[0])
            time.sleep(0.1)
        self.assertEqual(seen, {"backend=A", "backend=B"})

        page = self.fetch(f"https://127.0.0.1:{https}/")
        self.assertIn("Answered by backend", page)
        self.assertIn("Client address as this backend sees it: <b>127.0.0.1:", page)

        demo.send_signal(signal.SIGTERM)
        self.assertEqual(demo.wait(timeout=30), 0)
        leftovers = subprocess.run(
            ["pgrep", "-s", str(demo.pid)], capture_output=True, text=True
        )
        self.assertEqual(leftovers.stdout.strip(), "", "demo processes left running")
