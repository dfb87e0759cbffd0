# -*- test-case-name: tests.integration.test_nevow_examples -*-
"""
Nevow's example applications as written again in examples/nevow, each
served on a real loopback socket and asked by a real HTTP client
(L{twisted.web.client.Agent} and L{readBody}).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from typing import Any, Dict, Optional, Tuple

import pytest
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import serverFromString
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.server import Site

from examples.nevow import (
    children,
    disktemplates,
    fragments,
    hello,
    macros,
    nestedsequence,
    simple,
    table,
)
from tlcache.nevow import appserver

pytestmark = pytest.mark.integration

reactor: Any = _reactor


class ExampleSiteTests(TestCase):
    """
    Base: serve a site on 127.0.0.1 port 0 and fetch from it.
    """

    timeout = 30

    def setUp(self) -> None:
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool, connectTimeout=5)

    async def serve(self, site: Site) -> None:
        """
        Listen with C{site} until the test ends.
        """
        self.port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
            site
        )
        self.addCleanup(self.port.stopListening)

    async def fetch(
        self, path: str, cookie: Optional[bytes] = None
    ) -> Tuple[int, Dict[bytes, Optional[bytes]], str]:
        """
        GET C{path}; the status, some headers and the body as text.
        """
        address = f"http://127.0.0.1:{self.port.getHost().port}{path}"
        headers = Headers()
        if cookie is not None:
            headers.addRawHeader(b"cookie", cookie)
        request = self.agent.request(b"GET", address.encode(), headers)
        request.addTimeout(10, reactor)
        response = await request
        body = await readBody(response)
        found = {
            name: (response.headers.getRawHeaders(name) or [None])[0]
            for name in (b"content-type", b"location", b"set-cookie")
        }
        return response.code, found, body.decode("utf-8")


class HelloTests(ExampleSiteTests):
    """
    examples/nevow/hello.py.
    """

    async def test_stanAndTemplate(self) -> None:
        """
        The root greets in stan, C{/html} from its template, both as UTF-8
        HTML.
        """
        await self.serve(hello.site())
        code, headers, body = await self.fetch("/")
        self.assertEqual(code, 200)
        self.assertEqual(headers[b"content-type"], b"text/html; charset=utf-8")
        self.assertIn("<title>Hello</title>", body)
        self.assertIn("<h1>Hello, world!</h1>", body)
        code, _, body = await self.fetch("/html")
        self.assertEqual(code, 200)
        self.assertIn("<h1>Hello, world!</h1>", body)
        self.assertIn("Loaded from an XML template on disk.", body)


class SimpleTests(ExampleSiteTests):
    """
    examples/nevow/simple.py, with tlsession's sessions.
    """

    async def test_visitsAndReset(self) -> None:
        """
        The visit counter grows in one session and starts again after
        C{/reset}; the visitor's address is shown.
        """
        await self.serve(simple.site())
        code, headers, body = await self.fetch("/")
        self.assertEqual(code, 200)
        self.assertIn("You are visiting from <strong>127.0.0.1</strong>.", body)
        self.assertIn('<strong id="visits">1</strong>', body)
        assert headers[b"set-cookie"] is not None
        cookie = headers[b"set-cookie"].split(b";")[0]
        _, _, body = await self.fetch("/", cookie)
        self.assertIn('<strong id="visits">2</strong>', body)
        code, _, body = await self.fetch("/reset", cookie)
        self.assertEqual(code, 200)
        self.assertIn("The counter is back at zero.", body)
        _, _, body = await self.fetch("/", cookie)
        self.assertIn('<strong id="visits">1</strong>', body)

    async def test_sessionsApart(self) -> None:
        """
        A visitor without the cookie has a count of their own.
        """
        await self.serve(simple.site())
        _, headers, _ = await self.fetch("/")
        assert headers[b"set-cookie"] is not None
        await self.fetch("/", headers[b"set-cookie"].split(b";")[0])
        _, _, body = await self.fetch("/")
        self.assertIn('<strong id="visits">1</strong>', body)


class TableTests(ExampleSiteTests):
    """
    examples/nevow/table.py.
    """

    async def rendered(self, seed: int) -> str:
        """
        The table page with the readings of C{random.Random(seed)}.
        """
        await self.serve(appserver.NevowSite(table.Readings(random.Random(seed))))
        code, _, body = await self.fetch("/")
        self.assertEqual(code, 200)
        return "".join(body.split())

    async def test_patterns(self) -> None:
        """
        Items alternate between the two item patterns, with a divider
        between them, below the header and above the footer; names are
        escaped.
        """
        # Seed 5 draws all four sensors.
        body = await self.rendered(5)
        divider = '<tr><tdcolspan="2"></td></tr>'
        self.assertIn(
            "<tr><th>sensor</th><th>reading</th></tr>"
            '<trclass="odd"><td>cellar&lt;north&gt;</td><td>33°C</td></tr>'
            + divider
            + '<trclass="even"><td>garden&amp;shed</td><td>9°C</td></tr>'
            + divider
            + '<trclass="odd"><td>attic</td><td>29°C</td></tr>'
            + divider
            + '<trclass="even"><td>boiler</td><td>40°C</td></tr>'
            '<tr><tdcolspan="2">Endofreadings.</td></tr></table>',
            body,
        )

    async def test_empty(self) -> None:
        """
        With no readings the empty pattern is shown, and no item.
        """
        # Seed 2 draws no sensor.
        body = await self.rendered(2)
        self.assertIn('<tr><tdcolspan="2">Noreadingstoday.</td></tr>', body)
        self.assertNotIn("°C", body)

    async def test_random(self) -> None:
        """
        The page served by L{table.resource} is a table of readings.
        """
        await self.serve(appserver.NevowSite(table.resource()))
        code, _, body = await self.fetch("/")
        self.assertEqual(code, 200)
        self.assertIn("End of readings.", body)


class FragmentsTests(ExampleSiteTests):
    """
    examples/nevow/fragments.py.
    """

    async def test_fragments(self) -> None:
        """
        The fragment in the slot and the one returned by a render method
        both render with their own data, escaped.
        """
        await self.serve(fragments.site())
        code, _, body = await self.fetch("/")
        self.assertEqual(code, 200)
        self.assertIn(
            '<div id="sidebar"><div class="sidebar"><h2>Fragments &amp; friends</h2>'
            "<p>Your address: <span>127.0.0.1</span></p></div></div>",
            body,
        )
        self.assertIn(
            '<div id="footer"><a href="/">Home</a> | '
            '<a href="/about?x=1&amp;y=2">About &lt;us&gt;</a></div>',
            body,
        )


class NestedSequenceTests(ExampleSiteTests):
    """
    examples/nevow/nestedsequence.py.
    """

    async def test_nested(self) -> None:
        """
        Each section lists its own dishes, found through the object
        container; an empty section shows its empty pattern.
        """
        await self.serve(nestedsequence.site())
        code, _, body = await self.fetch("/")
        self.assertEqual(code, 200)
        self.assertIn(
            '<div class="section"><h2>Starters</h2><ul>'
            "<li><span>Soup of the day</span> €4.50</li>"
            "<li><span>Bread &amp; butter</span> €2.00</li></ul></div>"
            '<div class="section"><h2>Mains</h2><ul>'
            "<li><span>Fish &lt;grilled&gt;</span> €14.50</li>"
            "<li><span>Risotto</span> €12.00</li></ul></div>"
            '<div class="section"><h2>Desserts</h2>'
            "<ul><li>Nothing today.</li></ul></div>",
            body,
        )


class ChildrenTests(ExampleSiteTests):
    """
    examples/nevow/children.py.
    """

    async def test_links(self) -> None:
        """
        The root links to every kind of child, with the query escaped.
        """
        await self.serve(children.site())
        code, _, body = await self.fetch("/")
        self.assertEqual(code, 200)
        base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.assertIn(f'<a href="{base}/about">about</a>', body)
        self.assertIn(f'<a href="{base}/greet?name=Ada%20%26%20Bob">greeting</a>', body)

    async def test_children(self) -> None:
        """
        An attribute, the children dictionary, a method and the factory
        each find their page; other names are 404s.
        """
        await self.serve(children.site())
        self.assertIn("Found as an attribute.", (await self.fetch("/about"))[2])
        self.assertIn(
            "Found in the children dictionary.", (await self.fetch("/contact"))[2]
        )
        code, _, body = await self.fetch("/greet?name=Ada+%26+%3Cb%3E")
        self.assertEqual(code, 200)
        self.assertIn("<h1>Hello, Ada &amp; &lt;b&gt;!</h1>", body)
        code, _, body = await self.fetch("/12")
        self.assertEqual(code, 200)
        self.assertIn("<h1>12 squared is 144</h1>", body)
        base = f"http://127.0.0.1:{self.port.getHost().port}"
        self.assertIn(f'<a href="{base}/13">next</a>', body)
        self.assertEqual((await self.fetch("/twelve"))[0], 404)
        self.assertEqual((await self.fetch("/about/more"))[0], 404)


class DiskTemplatesTests(ExampleSiteTests):
    """
    examples/nevow/disktemplates.py.
    """

    async def test_bothPages(self) -> None:
        """
        The page from the file and its stan twin render the same data.
        """
        await self.serve(disktemplates.site())
        code, _, body = await self.fetch("/")
        self.assertEqual(code, 200)
        self.assertIn("<h1>Templates on disk &amp; in code</h1>", body)
        self.assertIn("<code>disktemplates.html</code>", body)
        code, _, body = await self.fetch("/stan")
        self.assertEqual(code, 200)
        self.assertIn("<h1>Templates on disk &amp; in code</h1>", body)
        self.assertIn("This page's template is stan", body)

    async def test_edited(self) -> None:
        """
        After the template file changes, the next request shows the change.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "page.html")
        shutil.copy(disktemplates.TEMPLATE, path)
        await self.serve(appserver.NevowSite(disktemplates.DiskPage(path)))
        self.assertIn("<code>disktemplates.html</code>", (await self.fetch("/"))[2])
        with open(path, "w") as f:
            f.write(
                '<p xmlns:n="http://nevow.com/ns/nevow/0.1">edited: '
                '<n:invisible n:render="string" n:data="title"/></p>'
            )
        stat = os.stat(path)
        os.utime(path, (stat.st_atime, stat.st_mtime + 10))
        code, _, body = await self.fetch("/")
        self.assertEqual(
            (code, body), (200, "<p>edited: Templates on disk &amp; in code</p>")
        )


class MacrosTests(ExampleSiteTests):
    """
    examples/nevow/macros.py.
    """

    async def test_macroOnce(self) -> None:
        """
        Over three requests the macro ran once and the render method three
        times.
        """
        page = macros.Front()
        await self.serve(appserver.NevowSite(page))
        for count in (1, 2, 3):
            code, _, body = await self.fetch("/")
            self.assertEqual(code, 200)
            self.assertIn("Navigation built by macro run number 1.", body)
            self.assertIn(f"Page renders so far: {count}.", body)
        self.assertIn('<a href="#weather">Weather &amp; tides</a>', body)
        self.assertEqual((page.macroRuns, page.renders), (1, 3))
