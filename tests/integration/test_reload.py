"""
Reloading a real balancer's configuration file under C{ab} load, through
C{tlbalancectl reload} and SIGHUP; and C{twistd tlbalance --check-config}
run as a program.
"""

from __future__ import annotations

import os
import signal
import ssl
import sys
from typing import Any, Dict, List

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.integration._support import (
    CHECKOUT,
    LOOPBACK,
    accepts,
    describeRun,
    freePort,
    listeningPort,
    reactor,
    runProgram,
    sleep,
    startPeer,
    temporaryDirectory,
    waitUntil,
)
from tests.integration.test_control import startSlowBackend, tlbalancectl
from tests.peers import requirePeer
from tlbalance.service import BalancerService
from tlbalance.tap import Options, makeService

pytestmark = pytest.mark.integration

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def configText(control: str, ports: Dict[str, int]) -> str:
    """
    A configuration file listening on a free loopback port, with one
    C{[[backend]]} table per name in C{ports}.
    """
    text = (
        f'listen = ["tcp:0:interface={LOOPBACK}"]\n'
        f'control = "{control}"\n'
        "drain-timeout = 1\n"
    )
    for name, port in ports.items():
        text += f'[[backend]]\nname = "{name}"\nendpoint = "{LOOPBACK}:{port}"\n'
    return text


class ReloadUnderLoadTests(TestCase):
    """
    A reload adding a backend, then one removing another, while C{ab}
    sends requests: no request fails, the added backend gets some, the
    removed one none after the reload.
    """

    async def test_addThenRemove(self) -> None:
        ab = requirePeer("ab")
        directory = temporaryDirectory(self)
        control = os.path.join(directory, "control.sock")
        path = os.path.join(directory, "tlbalance.toml")
        ports: Dict[str, int] = {}
        sites: Dict[str, Any] = {}
        for name in ("a", "b", "c"):
            ports[name], sites[name] = await startSlowBackend(self, name, delay=0.02)

        def write(names: str) -> None:
            with open(path, "w", encoding="utf-8") as f:
                f.write(configText(control, {n: ports[n] for n in names}))

        write("ab")
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options, reactor)
        assert isinstance(service, BalancerService)
        service.startService()
        self.addCleanup(service.stopService)
        address: Any = listeningPort(service.listeners[0]).getHost()
        url = f"http://{LOOPBACK}:{address.port}/"
        load = runProgram([ab, "-q", "-n", "1200", "-c", "8", url], timeout=60)

        await sleep(0.7)
        write("abc")
        result = await tlbalancectl(control, "reload")
        self.assertEqual(result.returncode, 0, describeRun(result))
        self.assertEqual(
            result.stdout, f"server c added (tcp:host={LOOPBACK}:port={ports['c']})\n"
        )

        await sleep(0.7)
        write("bc")
        a = service.balancer.pool.byName("a")
        os.kill(os.getpid(), signal.SIGHUP)
        await waitUntil(lambda: a.admin.value == "drain", 5, "the SIGHUP reload")
        startedToA = a.total
        report = await load
        self.assertEqual(report.returncode, 0, describeRun(report))
        self.assertRegex(report.stdout, r"Complete requests:\s+1200\b")
        self.assertRegex(report.stdout, r"Failed requests:\s+0\b")
        self.assertNotIn("Non-2xx", report.stdout)
        self.assertGreater(sites["c"].accepted, 0)
        self.assertEqual(sites["a"].accepted, startedToA)
        await waitUntil(
            lambda: a not in service.balancer.pool.backends, 5, "a forgotten"
        )
        self.assertEqual([b.name for b in service.balancer.pool.backends], ["b", "c"])

    async def test_invalidRefused(self) -> None:
        """
        An invalid file is refused with every problem; the balancer goes
        on with the configuration it had.
        """
        directory = temporaryDirectory(self)
        control = os.path.join(directory, "control.sock")
        path = os.path.join(directory, "tlbalance.toml")
        port, _ = await startSlowBackend(self, "a")
        with open(path, "w", encoding="utf-8") as f:
            f.write(configText(control, {"a": port}))
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options, reactor)
        assert isinstance(service, BalancerService)
        service.startService()
        self.addCleanup(service.stopService)
        with open(path, "a", encoding="utf-8") as f:
            f.write("weight = 999\nmaxconn = -1\n")
        result = await tlbalancectl(control, "reload")
        self.assertEqual(result.returncode, 1, describeRun(result))
        self.assertIn("reload refused, the running configuration stays", result.stderr)
        self.assertIn("weight", result.stderr)
        self.assertIn("maxconn", result.stderr)
        self.assertEqual(service.balancer.pool.byName("a").weight, 1)


class CertificateReloadTests(TestCase):
    """
    A reload makes a kept C{ssl:} listener serve its renewed certificate,
    on the same socket.
    """

    async def test_renewed(self) -> None:
        from tlbalance._selfsigned import selfSignedPEM

        directory = temporaryDirectory(self)
        control = os.path.join(directory, "control.sock")
        path = os.path.join(directory, "tlbalance.toml")
        pem = os.path.join(directory, "site.pem")
        with open(pem, "wb") as out:
            out.write(selfSignedPEM(["old.example"]))
        backend, _ = await startSlowBackend(self, "a")
        with open(path, "w", encoding="utf-8") as f:
            f.write(
                configText(control, {"a": backend}).replace(
                    f"tcp:0:interface={LOOPBACK}",
                    f"ssl:0:interface={LOOPBACK}:privateKey={pem}",
                )
            )
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options, reactor)
        assert isinstance(service, BalancerService)
        service.startService()
        self.addCleanup(service.stopService)
        listener = service.listeners[0]
        port = listeningPort(listener)
        address: Any = port.getHost()

        def served() -> Deferred[str]:
            return deferToThread(ssl.get_server_certificate, (LOOPBACK, address.port))

        def names(certificate: str) -> List[str]:
            loaded = x509.load_pem_x509_certificate(certificate.encode("ascii"))
            return [
                str(a.value)
                for a in loaded.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            ]

        self.assertEqual(names(await served()), ["old.example"])
        with open(pem + ".new", "wb") as out:
            out.write(selfSignedPEM(["new.example"]))
        os.rename(pem + ".new", pem)
        result = await tlbalancectl(control, "reload")
        self.assertEqual(result.returncode, 0, describeRun(result))
        self.assertIn("TLS and PROXY settings re-read", result.stdout)
        self.assertIs(listener.port, port)
        self.assertEqual(names(await served()), ["new.example"])


class TwistdSIGHUPTests(TestCase):
    """
    A real C{twistd -n tlbalance --config FILE} reloads on SIGHUP and keeps
    running (twistd leaves SIGHUP to the balancer).
    """

    async def test_sighup(self) -> None:
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "tlbalance.toml")
        portA, _ = await startSlowBackend(self, "a")
        portB, _ = await startSlowBackend(self, "b")
        listen = freePort()
        text = configText(os.path.join(directory, "c.sock"), {"a": portA}).replace(
            "tcp:0:", f"tcp:{listen}:"
        )
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        process = startPeer(
            self,
            "twistd",
            [TWISTD, "-n", "--pidfile=", "tlbalance", "--config", path],
            os.path.join(directory, "twistd.log"),
            cwd=directory,
        )
        await process.listening((LOOPBACK, listen), timeout=20)
        with open(path, "a", encoding="utf-8") as f:
            f.write(f'[[backend]]\nname = "b"\nendpoint = "{LOOPBACK}:{portB}"\n')
        process.signal(signal.SIGHUP)
        added = f"Reload: server b added (tcp:host={LOOPBACK}:port={portB})"
        await waitUntil(lambda: added in process.output(), 10, "the reload's log")
        with open(path, "a", encoding="utf-8") as f:
            f.write("weight = 999\n")
        process.signal(signal.SIGHUP)
        await waitUntil(
            lambda: "Reload refused: backend[1].weight" in process.output(),
            10,
            "the refusal's log",
        )
        self.assertTrue(process.running(), process.output())
        self.assertTrue(accepts((LOOPBACK, listen)))


class CheckConfigProgramTests(TestCase):
    """
    C{twistd tlbalance --check-config}, run as a program: it listens on
    nothing and exits 0 or 1.
    """

    async def test_goodAndBad(self) -> None:
        directory = temporaryDirectory(self)
        path = os.path.join(directory, "tlbalance.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(configText(os.path.join(directory, "c.sock"), {"a": 9}))
        good = await runProgram(
            [TWISTD, "tlbalance", "--check-config", "--config", path], cwd=CHECKOUT
        )
        self.assertEqual(good.returncode, 0, describeRun(good))
        self.assertEqual(
            good.stdout, "configuration OK: 1 listener(s), 1 backend(s), roundrobin\n"
        )
        self.assertFalse(os.path.exists(os.path.join(directory, "c.sock")))
        with open(path, "a", encoding="utf-8") as f:
            f.write(
                '[[backend]]\nname = "b"\nweight = 999\n'
                'endpoint = "ssl:host=h:port=1:caCertsDir=/nonexistent"\n'
            )
        bad = await runProgram(
            [
                TWISTD,
                "tlbalance",
                "--check-config",
                "--config",
                path,
                "--retries",
                "1",
            ],
            cwd=CHECKOUT,
        )
        self.assertEqual(bad.returncode, 1, describeRun(bad))
        lines = bad.stderr.splitlines()
        self.assertEqual(len(lines), 2, describeRun(bad))
        self.assertIn("backend[1].weight", lines[0] + lines[1])
        self.assertIn("/nonexistent", lines[0] + lines[1])
        self.assertTrue(all(line.startswith("twistd tlbalance: ") for line in lines))
