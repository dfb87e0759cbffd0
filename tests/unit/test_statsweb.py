"""
L{tlbalance.statsweb}: the stats listener's pages, rendered through
L{DummyRequest}s.
"""

from __future__ import annotations

import json
import re
from typing import List, Sequence

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from tests.unit._statsfixture import failCheck, startedBalancer
from tlbalance.service import BalancerService
from tlbalance.stats import balancerStats
from tlbalance.statsweb import (
    NOSCRIPT_REFRESH,
    StatsResource,
    formatBytes,
    formatDuration,
)


def get(resource: StatsResource, path: bytes, method: bytes = b"GET") -> DummyRequest:
    """
    Render C{path} (a leaf resource answers synchronously).
    """
    request = DummyRequest(path.lstrip(b"/").split(b"/"))
    request.path = path  # type: ignore[attr-defined]
    request.method = method
    body = resource.render(request)
    assert isinstance(body, bytes), body
    request.write(body)
    request.finish()
    return request


def body(request: DummyRequest) -> str:
    return b"".join(request.written).decode("utf-8")


def header(request: DummyRequest, name: bytes) -> Sequence[bytes]:
    return request.responseHeaders.getRawHeaders(name, [])


def statsResource(service: BalancerService) -> StatsResource:
    clock = service.balancer.clock
    return StatsResource(lambda: balancerStats(service, clock.seconds()))


def rows(page: str, table: str) -> List[List[str]]:
    """
    The cells of a table's body rows, as text.
    """
    section = page.split(f'<table id="{table}">', 1)[1].split("</table>", 1)[0]
    tbody = section.split("<tbody>", 1)[1]
    return [
        re.findall(r"<td>(.*?)</td>", row)
        for row in re.findall(r"<tr[^>]*>(.*?)</tr>", tbody)
    ]


class StatsResourceTests(SynchronousTestCase):
    """
    C{/}, C{/stats.json} and C{/metrics}.
    """

    def test_page(self) -> None:
        """
        The page shows each listener and backend with its state, the failed
        check's reason, and the balancer's version; it needs nothing from
        elsewhere and reloads itself without JavaScript.
        """
        service, reactor = startedBalancer(self)
        failCheck(service, 0, reactor.seconds())
        request = get(statsResource(service), b"/")
        self.assertEqual(
            header(request, b"content-type"), [b"text/html; charset=utf-8"]
        )
        page = body(request)
        backends = rows(page, "backends")
        self.assertEqual([r[0] for r in backends], ["127.0.0.1:1", "127.0.0.1:2"])
        self.assertEqual([r[1] for r in backends], ["DOWN", "UP"])
        self.assertEqual(backends[0][3:5], ["failed", "connection refused"])
        self.assertIn('<tr class="DOWN">', page)
        self.assertEqual(
            rows(page, "listeners")[0][:3], ["tcp:0:interface=127.0.0.1", "0", "0"]
        )
        self.assertIn(
            f'<noscript><meta http-equiv="refresh" content="{NOSCRIPT_REFRESH}">', page
        )
        self.assertIn('name="viewport"', page)
        self.assertNotRegex(page, r'(src|href)="(https?:)?//')
        self.assertIn(
            b"default-src 'none'", header(request, b"content-security-policy")[0]
        )

    def test_escaped(self) -> None:
        """
        A backend name with markup is shown as text, never as markup.
        """
        service, reactor = startedBalancer(self)
        service.balancer.pool.backends[0].name = '<script>alert("x")</script>&'
        page = body(get(statsResource(service), b"/"))
        self.assertNotIn("<script>alert", page)
        self.assertEqual(
            rows(page, "backends")[0][0],
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;",
        )

    def test_drain(self) -> None:
        """
        A drained backend shows its health and the admin state.
        """
        service, reactor = startedBalancer(self)
        service.balancer.pool.setAdminState("127.0.0.1:2", "drain")
        page = body(get(statsResource(service), b"/"))
        self.assertEqual(rows(page, "backends")[1][1], "UP, drain")
        self.assertIn('<tr class="DRAIN">', page)

    def test_json(self) -> None:
        """
        C{/stats.json} is the snapshot, as JSON.
        """
        service, reactor = startedBalancer(self)
        request = get(statsResource(service), b"/stats.json")
        self.assertEqual(header(request, b"content-type"), [b"application/json"])
        served = json.loads(body(request))
        expected = balancerStats(service, reactor.seconds())
        # The process's CPU time and memory move between the two reads.
        for stats in (served, expected):
            del stats["process"]["cpuSeconds"], stats["process"]["rssBytes"]
        self.assertEqual(served, expected)

    def test_metrics(self) -> None:
        """
        C{/metrics} is Prometheus text that prometheus_client's parser reads.
        """
        service, reactor = startedBalancer(self)
        request = get(statsResource(service), b"/metrics")
        self.assertTrue(header(request, b"content-type")[0].startswith(b"text/plain"))
        names = {f.name for f in text_string_to_metric_families(body(request))}
        self.assertIn("tlbalance_server_status", names)

    def test_notFound(self) -> None:
        """
        Any other path is a 404 that says where to look.
        """
        service, _ = startedBalancer(self)
        request = get(statsResource(service), b"/admin")
        self.assertEqual(request.responseCode, 404)
        self.assertIn("/metrics", body(request))

    def test_readOnly(self) -> None:
        """
        A POST is refused: nothing here changes the balancer.
        """
        from twisted.web.error import UnsupportedMethod

        service, _ = startedBalancer(self)
        with self.assertRaises(UnsupportedMethod):
            get(statsResource(service), b"/", b"POST")


class FormatTests(SynchronousTestCase):
    """
    How the page writes durations and sizes.
    """

    def test_duration(self) -> None:
        self.assertEqual(
            [formatDuration(s) for s in (None, 2.25, 42, 250, 7300, 3 * 86400 + 7200)],
            ["-", "2.2s", "42s", "4m 10s", "2h 1m", "3d 2h"],
        )

    def test_bytes(self) -> None:
        self.assertEqual(
            [formatBytes(n) for n in (None, 512, 1536, 5 * 1024**3)],
            ["-", "512 B", "1.5 KiB", "5.0 GiB"],
        )
