"""
Sessions end to end: a real twisted.web L{Site} on loopback with a
L{SessionResource}, and a real HTTP client keeping cookies like a browser.
"""

from __future__ import annotations

import json
import time
from http.cookiejar import CookieJar
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import SSL4ServerEndpoint, TCP4ServerEndpoint
from twisted.internet.ssl import Certificate, CertificateOptions
from twisted.trial.unittest import TestCase
from twisted.web.client import (
    Agent,
    BrowserLikePolicyForHTTPS,
    CookieAgent,
    HTTPConnectionPool,
)
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from tests.certs import makeAuthority
from tests.integration._support import LOOPBACK, reactor, responseBody, waitUntil
from tlsession import (
    ISession,
    MemorySessionStore,
    SessionManager,
    StoreUnavailableError,
    sessionSite,
)


class Count(Resource):
    """
    Counts visits in the session.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        session = ISession(request)
        session["visits"] = session.get("visits", 0) + 1
        return b"%d" % session["visits"]


class Show(Resource):
    """
    Shows the session's data as JSON.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return json.dumps(dict(ISession(request)), sort_keys=True).encode()


class Logout(Resource):
    """
    Ends the session.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        ISession(request).flush()
        return b"bye"


class Gate(Resource):
    """
    Holds requests until the test lets them write C{?key=} into the session.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.waiting: List[Tuple[Any, str]] = []

    def render_GET(self, request: Any) -> Any:
        key = request.args[b"key"][0].decode()
        ISession(request)  # loaded before the request was let through
        self.waiting.append((request, key))
        return NOT_DONE_YET

    def openAll(self) -> None:
        """
        Let every waiting request write its key and finish.
        """
        waiting, self.waiting = self.waiting, []
        for request, key in waiting:
            ISession(request)[key] = True
            request.write(key.encode())
            request.finish()


class Both(Resource):
    """
    Uses Twisted's own session next to ours.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        ISession(request)["both"] = True
        return request.getSession().uid


class Browser:
    """
    An HTTP client with a cookie jar, over new connections each time.
    """

    def __init__(self, trustRoot: Optional[bytes] = None) -> None:
        self.jar = CookieJar()
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        policy = (
            BrowserLikePolicyForHTTPS(Certificate.loadPEM(trustRoot))
            if trustRoot
            else BrowserLikePolicyForHTTPS()
        )
        self.agent = CookieAgent(
            Agent(reactor, policy, pool=self.pool, connectTimeout=5), self.jar
        )

    async def get(
        self, url: str, cookie: Optional[bytes] = None
    ) -> Tuple[IResponse, bytes]:
        """
        GET C{url} (sending C{cookie} as well, when given) and read the body.
        """
        headers = Headers({b"cookie": [cookie]}) if cookie else None
        d = self.agent.request(b"GET", url.encode("ascii"), headers)
        d.addTimeout(10, reactor)
        response = await d
        return response, await responseBody(response)

    def cookies(self) -> Dict[str, Any]:
        """
        The jar's cookies by name.
        """
        return {cookie.name: cookie for cookie in self.jar}


def setCookie(response: IResponse, name: bytes) -> Dict[bytes, bytes]:
    """
    The attributes of cookie C{name} as the response set it (flags map to
    C{b""}; the value is under C{b"value"}).
    """
    for line in response.headers.getRawHeaders(b"set-cookie", []):
        first, *rest = line.split(b"; ")
        key, _, value = first.partition(b"=")
        if key == name:
            attributes = {b"value": value}
            for part in rest:
                attribute, _, attributeValue = part.partition(b"=")
                attributes[attribute.lower()] = attributeValue
            return attributes
    raise AssertionError(f"no {name!r} cookie in {response.headers}")


class SessionSiteTests(TestCase):
    """
    What a browser notices of a site with sessions.
    """

    def makeSite(self, store: Any = None) -> Tuple[Site, Gate]:
        """
        A site with sessions in C{store} (a new memory store by default).
        """
        if store is None:
            store = MemorySessionStore(reactor)
            store.startService()
            self.addCleanup(store.stopService)
        manager = SessionManager(store, reactor)
        root = Resource()
        gate = Gate()
        for name, child in [
            (b"count", Count()),
            (b"show", Show()),
            (b"logout", Logout()),
            (b"gate", gate),
            (b"both", Both()),
        ]:
            root.putChild(name, child)
        site = sessionSite(root, manager)
        site.noisy = False

        def expireTwistedSessions() -> None:
            for session in list(site.sessions.values()):
                session.expire()

        self.addCleanup(expireTwistedSessions)
        return site, gate

    async def serve(self, store: Any = None) -> Tuple[str, Gate]:
        """
        Serve L{makeSite} on loopback; return its URL and its gate.
        """
        site, gate = self.makeSite(store)
        port = await TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK).listen(site)
        self.addCleanup(port.stopListening)
        return f"http://{LOOPBACK}:{port.getHost().port}", gate

    async def test_visitCounter(self) -> None:
        """
        The count climbs across requests from one browser, and starts over
        for another.
        """
        url, _ = await self.serve()
        browser = Browser()
        counts = [(await browser.get(url + "/count"))[1] for _ in range(3)]
        self.assertEqual(counts, [b"1", b"2", b"3"])
        self.assertEqual((await Browser().get(url + "/count"))[1], b"1")

    async def test_cookieAsReceived(self) -> None:
        """
        Over HTTP the browser receives an HttpOnly, SameSite=Lax cookie for
        the whole site, without Secure, and a response that varies on
        C{Cookie}.
        """
        url, _ = await self.serve()
        browser = Browser()
        response, _ = await browser.get(url + "/count")
        attributes = setCookie(response, b"TLSESSION")
        self.assertEqual(len(attributes[b"value"]), 43)
        self.assertEqual(attributes[b"path"], b"/")
        self.assertEqual(attributes[b"samesite"], b"lax")
        self.assertEqual(attributes[b"max-age"], b"1800")
        self.assertIn(b"httponly", attributes)
        self.assertNotIn(b"secure", attributes)
        self.assertNotIn(b"domain", attributes)
        self.assertEqual(response.headers.getRawHeaders(b"vary"), [b"Cookie"])
        cookie = browser.cookies()["TLSESSION"]
        self.assertTrue(cookie.has_nonstandard_attr("HttpOnly"))

    async def test_tls(self) -> None:
        """
        Over TLS the cookie is C{__Host-TLSESSION}, C{Secure}, and the
        browser sends it back over TLS.
        """
        authority = makeAuthority()
        issued = authority.issue(ipAddresses=[LOOPBACK])
        site, _ = self.makeSite()
        options = CertificateOptions(
            privateKey=issued.key, certificate=issued.certificate
        )
        endpoint = SSL4ServerEndpoint(reactor, 0, options, interface=LOOPBACK)
        port = await endpoint.listen(site)
        self.addCleanup(port.stopListening)
        url = f"https://{LOOPBACK}:{port.getHost().port}"
        browser = Browser(trustRoot=authority.certPEM)
        response, body = await browser.get(url + "/count")
        attributes = setCookie(response, b"__Host-TLSESSION")
        self.assertIn(b"secure", attributes)
        self.assertEqual(attributes[b"path"], b"/")
        self.assertEqual((await browser.get(url + "/count"))[1], b"2")

    async def test_logout(self) -> None:
        """
        Logging out clears the cookie in the browser; its next visit starts
        a new session, and the old identifier no longer works.
        """
        url, _ = await self.serve()
        browser = Browser()
        await browser.get(url + "/count")
        await browser.get(url + "/count")
        old = browser.cookies()["TLSESSION"].value
        response, body = await browser.get(url + "/logout")
        self.assertEqual(body, b"bye")
        attributes = setCookie(response, b"TLSESSION")
        self.assertEqual((attributes[b"value"], attributes[b"max-age"]), (b"", b"0"))
        self.assertNotIn("TLSESSION", browser.cookies())
        self.assertEqual((await browser.get(url + "/count"))[1], b"1")
        self.assertNotEqual(browser.cookies()["TLSESSION"].value, old)
        _, body = await Browser().get(
            url + "/count", cookie=b"TLSESSION=" + old.encode()
        )
        self.assertEqual(body, b"1")

    async def test_concurrentRequestsLoseNoUpdate(self) -> None:
        """
        Two requests of one session in flight at once, each writing its own
        key, both keep their write.
        """
        store = MemorySessionStore(reactor)
        store.startService()
        self.addCleanup(store.stopService)
        url, gate = await self.serve(store)
        browser = Browser()
        await browser.get(url + "/count")
        first = Deferred.fromCoroutine(browser.get(url + "/gate?key=left"))
        second = Deferred.fromCoroutine(browser.get(url + "/gate?key=right"))
        await waitUntil(lambda: len(gate.waiting) == 2, 10, "both requests in")
        gate.openAll()
        self.assertEqual((await first)[1], b"left")
        self.assertEqual((await second)[1], b"right")
        _, body = await browser.get(url + "/show")
        self.assertEqual(json.loads(body), {"left": True, "right": True, "visits": 1})
        self.assertEqual(store.stats()["conflicts"], 1)

    async def test_twistedSessionsBeside(self) -> None:
        """
        Twisted's own C{request.getSession()} keeps working, with its own
        cookie, beside the session.
        """
        url, _ = await self.serve()
        browser = Browser()
        _, uid = await browser.get(url + "/both")
        _, again = await browser.get(url + "/both")
        self.assertEqual(uid, again)
        self.assertEqual(set(browser.cookies()), {"TLSESSION", "TWISTED_SESSION"})

    async def test_storeDown(self) -> None:
        """
        With the session store unreachable the browser gets 503 with
        C{Retry-After}, quickly.
        """

        class DownStore(MemorySessionStore):
            def load(self, sessionID: str) -> Any:
                return fail(StoreUnavailableError("session daemon down"))

        url, _ = await self.serve(DownStore(reactor))
        started = time.monotonic()
        response, body = await Browser().get(
            url + "/count", cookie=b"TLSESSION=" + b"A" * 43
        )
        self.assertLess(time.monotonic() - started, 2)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers.getRawHeaders(b"retry-after"), [b"5"])
        self.assertIn(b"unavailable", body)
