# -*- test-case-name: tests.integration.test_stats -*-
"""
The stats listener of a real balancer in front of real backends: Prometheus
scrapes C{/metrics} (read back with prometheus_client's own parser), and
headless Chromium shows a killed backend going DOWN on the status page,
with JavaScript and without.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any, Dict, List, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.trial.unittest import TestCase
from twisted.web.server import Site

from tests.integration._support import (
    LOOPBACK,
    ClientAddressPage,
    clientEndpoint,
    describeRun,
    httpGet,
    runProgram,
    startBalancerFromArguments,
    temporaryDirectory,
)
from tests.peers import requirePeer
from tlbalance.service import BalancerService

pytestmark = pytest.mark.integration

#: Health checks every INTER seconds take a backend down after FALL
#: failures: a killed backend is DOWN within INTER * FALL (plus jitter).
INTER = 0.2
FALL = 2

#: What the test allows on top of INTER * FALL: the checks' 10% jitter,
#: and a busy machine.
SLACK = 0.6


class StatsListenerTests(TestCase):
    """
    C{twistd tlbalance --stats tcp:0:interface=127.0.0.1} in front of two
    web backends.
    """

    async def startBalancer(self) -> Tuple[BalancerService, Any, List[IListeningPort]]:
        """
        Two web backends and a balancer with fast HTTP checks and a stats
        listener.

        @return: the balancer, its client address, the backends' ports.
        """
        ports = []
        for _ in range(2):
            site = Site(ClientAddressPage())
            site.noisy = False
            port = await serverFromString(
                reactor, f"tcp:0:interface={LOOPBACK}"
            ).listen(site)
            self.addCleanup(port.stopListening)
            ports.append(port)
        backends: List[str] = []
        for port in ports:
            backends += ["--backend", f"{LOOPBACK}:{port.getHost().port}"]
        service, addresses = startBalancerFromArguments(
            self,
            "--listen",
            f"tcp:0:interface={LOOPBACK}",
            *backends,
            "--check",
            "http GET / 200",
            "--check-inter",
            str(INTER),
            "--check-fall",
            str(FALL),
            "--stats",
            f"tcp:0:interface={LOOPBACK}",
        )
        return service, addresses[0], ports

    def statsURL(self, service: BalancerService, path: str = "/") -> str:
        port = service.statsListeners[0].port
        assert port is not None
        return f"http://{LOOPBACK}:{port.getHost().port}{path}"  # type: ignore[attr-defined]

    async def get(self, service: BalancerService, path: str) -> str:
        port = service.statsListeners[0].port
        assert port is not None
        response = await httpGet(clientEndpoint(port.getHost()), path)
        self.assertEqual(response.status, 200, response.text)
        return response.text

    async def test_prometheusScrape(self) -> None:
        """
        After three requests through the balancer, C{/metrics} counts three
        sessions on the listener and across the backends, with their
        bytes, both backends UP; prometheus_client's parser reads it all.
        """
        service, address, _ = await self.startBalancer()
        for _ in range(3):
            response = await httpGet(clientEndpoint(address))
            self.assertEqual(response.status, 200)
        text = await self.get(service, "/metrics")
        samples: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = (
                    sample.value
                )

        def total(name: str, **fixed: str) -> float:
            return sum(
                value
                for (sampleName, labels), value in samples.items()
                if sampleName == name and set(fixed.items()) <= set(labels)
            )

        self.assertEqual(total("tlbalance_frontend_sessions_total"), 3)
        self.assertEqual(total("tlbalance_server_sessions_total"), 3)
        self.assertGreater(total("tlbalance_server_bytes_in_total"), 0)
        self.assertGreater(total("tlbalance_server_bytes_out_total"), 0)
        self.assertEqual(total("tlbalance_server_status", state="UP"), 2)
        self.assertEqual(total("tlbalance_backend_active_servers"), 2)
        self.assertGreater(total("tlbalance_process_start_time_seconds"), 0)

    async def dumpDOM(self, url: str) -> str:
        """
        The page at C{url} as headless Chromium renders it, after its
        script has had a few seconds of (virtual) time.
        """
        chromium = requirePeer("chromium")
        result = await runProgram(
            [
                chromium,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                f"--user-data-dir={temporaryDirectory(self)}",
                "--virtual-time-budget=3000",
                "--dump-dom",
                url,
            ],
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, describeRun(result))
        return result.stdout

    async def page(self, service: BalancerService, script: bool) -> str:
        """
        The status page as a browser shows it: rendered by Chromium, or,
        without JavaScript, as served (Chromium's --dump-dom needs
        JavaScript to read the DOM, so it cannot show a page without it).
        """
        if script:
            return await self.dumpDOM(self.statsURL(service))
        return await self.get(service, "/")

    def backendStates(self, dom: str) -> Dict[str, str]:
        """
        The state cell of each backend row in a rendered page.
        """
        body = dom.split('<table id="backends">', 1)[1].split("</tbody>", 1)[0]
        states = {}
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", body):
            cells = re.findall(r"<td>(.*?)</td>", row)
            if cells:
                states[cells[0]] = cells[1]
        return states

    async def killedBackendGoesDown(self, script: bool) -> str:
        """
        Kill one backend, and read the page in Chromium until it shows the
        backend DOWN; it must have gone down within INTER * FALL.

        @return: the last rendered page.
        """
        service, _, ports = await self.startBalancer()
        killed = f"{LOOPBACK}:{ports[1].getHost().port}"
        dom = await self.page(service, script)
        self.assertEqual(set(self.backendStates(dom).values()), {"UP"})
        await ports[1].stopListening()
        stoppedAt = time.time()
        deadline = time.monotonic() + 20
        while self.backendStates(dom).get(killed) != "DOWN":
            self.assertLess(time.monotonic(), deadline, dom)
            dom = await self.page(service, script)
        self.assertEqual(self.backendStates(dom)[killed], "DOWN")
        stats = json.loads(await self.get(service, "/stats.json"))
        backend = next(b for b in stats["backends"] if b["name"] == killed)
        self.assertEqual(backend["check"]["status"], "failed")
        self.assertLessEqual(
            backend["lastStateChange"] - stoppedAt, INTER * FALL + SLACK, backend
        )
        return dom

    async def test_downInChromium(self) -> None:
        """
        With JavaScript, the page updates itself from C{/stats.json} (the
        rendered DOM says so) and shows the killed backend DOWN.
        """
        dom = await self.killedBackendGoesDown(script=True)
        self.assertRegex(dom, r'<span id="updated">updated \d\d:\d\d:\d\d UTC')

    async def test_downWithoutJavaScript(self) -> None:
        """
        Without JavaScript the server-rendered table shows the same, and
        the page reloads itself.
        """
        dom = await self.killedBackendGoesDown(script=False)
        self.assertIn('<span id="updated">rendered', dom)
        self.assertIn('<noscript><meta http-equiv="refresh"', dom)
