"""
Hitless upgrade with real processes: a second C{twistd tlbalance
--takeover PATH} takes a running balancer's TCP and unix listeners over
while C{ab} keeps sending requests, and not one of them fails.
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
from typing import Any, List

import pytest
from cryptography import x509
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.certs import makeAuthority
from tests.integration._support import (
    CHECKOUT,
    LOOPBACK,
    TWISTD,
    PeerProcess,
    describeRun,
    runProgram,
    sleep,
    startPeer,
    temporaryDirectory,
    waitUntil,
    writeCertificateDirectory,
)
from tests.integration.test_control import startSlowBackend
from tests.peers import requirePeer

pytestmark = pytest.mark.integration

#: Seconds the old balancer may take to drain.
DRAIN = 2.0


def unixGet(path: str) -> bytes:
    """
    One HTTP/1.0 request to a unix socket; the whole response.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(path)
        client.sendall(b"GET / HTTP/1.0\r\nHost: lb\r\n\r\n")
        chunks = []
        while True:
            chunk = client.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def servedName(address: str) -> str:
    """
    The common name of the certificate a TLS listener at C{HOST:PORT}
    serves.
    """
    host, port = address.rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        with context.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    subject = x509.load_der_x509_certificate(der).subject
    return str(subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value)


class TakeoverTests(TestCase):
    """
    C{twistd tlbalance --takeover PATH} against a running C{twistd
    tlbalance --control PATH}.
    """

    timeout = 90

    async def startTwistd(self, name: str, *arguments: str) -> PeerProcess:
        """
        Start C{twistd -n tlbalance ARGUMENTS} in the test's directory.
        """
        return startPeer(
            self,
            name,
            [*TWISTD, "-n", "--pidfile=", "tlbalance", *arguments],
            os.path.join(self.directory, f"{name}.log"),
            cwd=self.directory,
        )

    async def ctl(self, *words: str) -> Any:
        """
        C{tlbalancectl --json WORDS} on the control socket.
        """
        result = await runProgram(
            [sys.executable, "-m", "tlbalance.ctl", "--control", self.control]
            + ["--json", *words],
            cwd=CHECKOUT,
        )
        self.assertEqual(result.returncode, 0, describeRun(result))
        return json.loads(result.stdout)

    async def test_handoverUnderLoad(self) -> None:
        """
        Under C{ab} load, the new balancer takes the TCP, unix and TLS
        listeners and the control socket over; no request fails; the old
        balancer drains and exits; the new one serves every listener
        afterwards, the TLS one with the certificate it read.
        """
        ab = requirePeer("ab")
        self.directory = temporaryDirectory(self)
        self.control = os.path.join(self.directory, "control.sock")
        unixPath = os.path.join(self.directory, "lb.sock")
        backendPort, site = await startSlowBackend(self, "served", delay=0.005)
        authority = makeAuthority()
        certificates = writeCertificateDirectory(
            self, {"site.pem": authority.issue("old.test")}
        )
        arguments = [
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            "--listen",
            f"unix:{unixPath}",
            "--listen",
            f"tlsni:certdir={certificates}:tcp:0:interface={LOOPBACK}",
            "--backend",
            f"{LOOPBACK}:{backendPort}",
            "--control",
            self.control,
            "--drain-timeout",
            str(DRAIN),
        ]
        old = await self.startTwistd("old", *arguments)
        await waitUntil(
            lambda: os.path.exists(self.control) or not old.running(),
            20,
            "the old balancer's control socket",
        )
        self.assertTrue(old.running(), old.output())
        listeners = (await self.ctl("show", "listeners"))["listeners"]
        address = listeners[0]["address"]
        self.assertEqual(listeners[1]["address"], unixPath)
        tlsAddress = listeners[2]["address"]
        self.assertEqual(await deferToThread(servedName, tlsAddress), "old.test")
        with open(os.path.join(certificates, "site.pem"), "wb") as f:
            f.write(authority.issue("new.test").combinedPEM())

        load = runProgram(
            [ab, "-q", "-n", "6000", "-c", "8", f"http://{address}/"], timeout=80
        )
        await sleep(0.5)
        new = await self.startTwistd("new", *arguments, "--takeover", self.control)
        code = await old.exited(30)
        self.assertEqual(code, 0, old.output())
        self.assertFalse(load.called, "the load ended before the handover")
        report = await load
        self.assertEqual(report.returncode, 0, describeRun(report))
        self.assertRegex(report.stdout, r"Complete requests:\s+6000\b")
        self.assertRegex(report.stdout, r"Failed requests:\s+0\b")
        self.assertNotIn("Non-2xx", report.stdout)

        self.assertTrue(new.running(), new.output())
        self.assertIn("Takeover: serving 3 listener(s) of pid", new.output())
        self.assertIn(f"of pid {old.pid}", new.output())
        self.assertIn("draining, then exiting", old.output())
        shown: List[Any] = (await self.ctl("show", "listeners"))["listeners"]
        self.assertEqual([s["address"] for s in shown], [address, unixPath, tlsAddress])
        self.assertEqual(await deferToThread(servedName, tlsAddress), "new.test")
        before = site.accepted
        response = await deferToThread(unixGet, unixPath)
        self.assertTrue(response.startswith(b"HTTP/1.0 200"), response)
        self.assertEqual(site.accepted, before + 1)

    async def test_failedStartKeepsOld(self) -> None:
        """
        A new balancer that cannot start (one of its new listeners cannot
        bind) exits with one line after receiving the sockets, and the old
        one goes on serving its listeners and its control socket.
        """
        self.directory = temporaryDirectory(self)
        self.control = os.path.join(self.directory, "control.sock")
        unixPath = os.path.join(self.directory, "lb.sock")
        backendPort, site = await startSlowBackend(self, "served")
        arguments = [
            "--listen",
            f"unix:{unixPath}",
            "--backend",
            f"{LOOPBACK}:{backendPort}",
            "--control",
            self.control,
        ]
        old = await self.startTwistd("old", *arguments)
        await waitUntil(
            lambda: os.path.exists(self.control) or not old.running(),
            20,
            "the old balancer's control socket",
        )
        taken = socket.socket()
        self.addCleanup(taken.close)
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await runProgram(
            [*TWISTD, "-n", "--pidfile=", "tlbalance", *arguments]
            + ["--listen", f"tcp:{port}:interface={LOOPBACK}"]
            + ["--takeover", self.control],
            cwd=self.directory,
        )
        self.assertEqual(result.returncode, 1, describeRun(result))
        self.assertEqual(len(result.stderr.splitlines()), 1, describeRun(result))
        self.assertIn("already in use", result.stderr)
        await waitUntil(
            lambda: "Takeover abandoned" in old.output(), 10, "the old one noticing"
        )
        self.assertTrue(old.running(), old.output())
        response = await deferToThread(unixGet, unixPath)
        self.assertTrue(response.startswith(b"HTTP/1.0 200"), response)
        shown = (await self.ctl("show", "listeners"))["listeners"]
        self.assertEqual([s["address"] for s in shown], [unixPath])

    async def test_notATakeoverPeer(self) -> None:
        """
        A control socket that does not know C{takeover} (an older
        tlbalance) stops the start with one line and exit status 1.
        """
        self.directory = temporaryDirectory(self)
        path = os.path.join(self.directory, "old.sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(server.close)
        server.bind(path)
        server.listen()
        server.settimeout(20)

        def answerOnce() -> bytes:
            connection, _ = server.accept()
            with connection:
                asked = connection.recv(100)
                connection.sendall(b"error: unknown command 'takeover'; try help\n\n")
                return asked

        asked = deferToThread(answerOnce)
        result = await runProgram(
            [*TWISTD, "-n", "--pidfile=", "tlbalance"]
            + ["--listen", f"tcp:0:interface={LOOPBACK}", "--backend", "127.0.0.1:9"]
            + ["--takeover", path],
            cwd=self.directory,
        )
        self.assertEqual(await asked, b"takeover\n")
        self.assertEqual(result.returncode, 1, describeRun(result))
        self.assertEqual(
            result.stderr,
            f"twistd tlbalance: --takeover: {path} is not a tlbalance that can "
            'hand over its listeners (it answered "error: unknown command '
            "'takeover'; try help\")\n",
        )

    async def test_nothingToTakeOver(self) -> None:
        """
        A path where no balancer listens stops the start with one line and
        exit status 1.
        """
        self.directory = temporaryDirectory(self)
        path = os.path.join(self.directory, "nobody.sock")
        result = await runProgram(
            [*TWISTD, "-n", "--pidfile=", "tlbalance"]
            + ["--listen", f"tcp:0:interface={LOOPBACK}", "--backend", "127.0.0.1:9"]
            + ["--takeover", path],
            cwd=self.directory,
        )
        self.assertEqual(result.returncode, 1, describeRun(result))
        self.assertEqual(
            result.stderr,
            f"twistd tlbalance: --takeover: cannot connect to {path}: No such "
            f"file or directory; is tlbalance running with --control {path}?\n",
        )
