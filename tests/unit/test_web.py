"""
Tests for L{tlsession.web}: plain twisted.web resources under a
L{SessionResource}, driven through a real L{Site} over in-memory transports.
"""

from __future__ import annotations

import gzip
from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import Logger, formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import NOT_DONE_YET, GzipEncoderFactory, Site
from zope.interface import implementer

from tlsession import ISession, SessionResource, sessionSite, web
from tlsession.interfaces import SessionStoreError, StoreUnavailableError
from tlsession.manager import SessionManager
from tlsession.session import Session
from tlsession.stores.memory import MemorySessionStore


@implementer(ISSLTransport)
class TLSStringTransport(StringTransport):
    """
    A transport twisted.web takes for TLS.
    """

    def getPeerCertificate(self) -> None:
        return None

    def setTcpNoDelay(self, enabled: bool) -> None:
        pass


class Response:
    """
    What a client received on one connection.
    """

    def __init__(self, transport: StringTransport) -> None:
        self.transport = transport

    @property
    def raw(self) -> bytes:
        """
        Everything received so far.
        """
        return self.transport.value()

    @property
    def complete(self) -> bool:
        """
        Whether the whole response arrived.
        """
        head, _, body = self.raw.partition(b"\r\n\r\n")
        if not head:
            return False
        if b"chunked" in self.header(b"transfer-encoding", b""):
            return body.endswith(b"0\r\n\r\n")
        length = self.header(b"content-length")
        return length is None or len(body) >= int(length)

    @property
    def code(self) -> int:
        """
        The status code.
        """
        return int(self.raw.split(b" ", 2)[1])

    def headers(self, name: bytes) -> List[bytes]:
        """
        The values of header C{name} (lower case).
        """
        head = self.raw.partition(b"\r\n\r\n")[0]
        found = []
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.partition(b": ")
            if key.lower() == name:
                found.append(value)
        return found

    def header(self, name: bytes, default: Any = None) -> Any:
        """
        The first value of header C{name}, or C{default}.
        """
        values = self.headers(name)
        return values[0] if values else default

    @property
    def body(self) -> bytes:
        """
        The body, de-chunked.
        """
        body = self.raw.partition(b"\r\n\r\n")[2]
        if b"chunked" not in self.header(b"transfer-encoding", b""):
            return body
        decoded = b""
        while body:
            size, _, body = body.partition(b"\r\n")
            length = int(size, 16)
            decoded, body = decoded + body[:length], body[length + 2 :]
            if not length:
                break
        return decoded

    def cookie(self, name: bytes = b"TLSESSION") -> Optional[bytes]:
        """
        The value this response set for cookie C{name}, or C{None}.
        """
        for line in self.headers(b"set-cookie"):
            key, _, rest = line.partition(b"=")
            if key == name:
                return rest.split(b";")[0]
        return None


class DelayedStore:
    """
    A memory store whose answers arrive only when L{release} is called, like
    a store across a network.
    """

    def __init__(self, store: MemorySessionStore) -> None:
        self.store = store
        self.idleTimeout = store.idleTimeout
        self.absoluteTimeout = store.absoluteTimeout
        self.maxValueBytes = store.maxValueBytes
        self.pending: List[Tuple[Deferred[Any], Deferred[Any]]] = []
        self.calls: List[str] = []

    def __getattr__(self, name: str) -> Callable[..., Deferred[Any]]:
        method = getattr(self.store, name)

        def call(*args: Any) -> Deferred[Any]:
            self.calls.append(name)
            answer: Deferred[Any] = Deferred()
            self.pending.append((method(*args), answer))
            return answer

        return call

    def release(self) -> None:
        """
        Deliver every answer held so far.
        """
        pending, self.pending = self.pending, []
        for result, answer in pending:
            result.chainDeferred(answer)


class Counter(Resource):
    """
    Counts visits in the session, the ordinary way.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        session = ISession(request)
        session["visits"] = session.get("visits", 0) + 1
        return b"visits=%d" % session["visits"]


class Later(Resource):
    """
    Answers asynchronously: the test finishes the requests it keeps.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: List[Any] = []

    def render_GET(self, request: Any) -> Any:
        self.requests.append(request)
        return NOT_DONE_YET


class Broken(Resource):
    """
    Changes the session, then fails.
    """

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        ISession(request)["broken"] = True
        raise ZeroDivisionError("render bug")


class WebTestCase(SynchronousTestCase):
    """
    A site with sessions over a memory store, reached over in-memory
    connections.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.memory = MemorySessionStore(self.clock)
        self.memory.startService()
        self.addCleanup(self.memory.stopService)
        self.root = Resource()
        self.root.putChild(b"count", Counter())
        self.later = Later()
        self.root.putChild(b"later", self.later)
        self.root.putChild(b"broken", Broken())
        self.useStore(self.memory)

    def useStore(self, store: Any) -> None:
        """
        Serve the test's resources with sessions kept in C{store}.
        """
        self.manager = SessionManager(store, self.clock)
        self.wrapper = SessionResource(self.root, self.manager, retryAfter=7)
        self.site = Site(self.wrapper, reactor=self.clock)
        self.site.displayTracebacks = False

    def get(
        self,
        path: bytes,
        cookie: Optional[bytes] = None,
        secure: bool = False,
        method: bytes = b"GET",
    ) -> Response:
        """
        Send one request on a new connection; the response fills in as the
        site writes it.
        """
        transport = TLSStringTransport() if secure else StringTransport()
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        channel.makeConnection(transport)
        lines = [method + b" " + path + b" HTTP/1.1", b"Host: example.test"]
        if cookie is not None:
            lines.append(b"Cookie: " + cookie)
        channel.dataReceived(b"\r\n".join(lines) + b"\r\n\r\n")
        self.addCleanup(channel.connectionLost, Failure(ConnectionDone()))
        return Response(transport)

    def stored(self, cookie: bytes) -> Dict[str, Any]:
        """
        The data stored under the session C{cookie} names (empty if none).
        """
        record = self.successResultOf(self.memory.load(cookie.decode("ascii")))
        return dict(Session(record)) if record is not None else {}


class RenderTests(WebTestCase):
    """
    What plain resources and their users see.
    """

    def test_visitCounter(self) -> None:
        """
        A plain resource counts visits with C{ISession(request)}; the count
        follows the cookie, and the response varies on it.
        """
        first = self.get(b"/count")
        self.assertEqual((first.code, first.body), (200, b"visits=1"))
        cookie = first.cookie()
        self.assertIsNotNone(cookie)
        self.assertIn(b"HttpOnly", first.header(b"set-cookie"))
        self.assertEqual(first.headers(b"vary"), [b"Cookie"])
        second = self.get(b"/count", b"TLSESSION=" + cookie)
        self.assertEqual(second.body, b"visits=2")
        self.assertEqual(self.get(b"/count").body, b"visits=1")

    def test_tlsCookie(self) -> None:
        """
        Over TLS the session cookie is the C{__Host-} one, C{Secure}.
        """
        response = self.get(b"/count", secure=True)
        self.assertIsNotNone(response.cookie(b"__Host-TLSESSION"))
        self.assertIn(b"; Secure", response.header(b"set-cookie"))

    def test_traversalSeesSession(self) -> None:
        """
        Resources below the wrapper can use the session while the tree is
        traversed, not only when rendering.
        """

        class Greeter(Resource):
            def getChild(self, name: bytes, request: Any) -> Resource:
                ISession(request)["lastChild"] = name.decode()
                return Counter()

        self.root.putChild(b"greet", Greeter())
        response = self.get(b"/greet/alice")
        self.assertEqual(response.body, b"visits=1")
        self.assertEqual(self.stored(response.cookie())["lastChild"], "alice")

    def test_resourceWithoutSession(self) -> None:
        """
        A response that never looks at the session gets no cookie and no
        C{Vary}, and stores nothing.
        """
        self.root.putChild(b"static", _Static(b"hello"))
        response = self.get(b"/static")
        self.assertEqual((response.code, response.body), (200, b"hello"))
        self.assertEqual(response.headers(b"set-cookie"), [])
        self.assertEqual(response.headers(b"vary"), [])
        self.assertEqual(self.memory.stats()["sessions"], 0)

    def test_notFoundBelowWrapper(self) -> None:
        """
        Unknown paths below the wrapper are 404 as usual.
        """
        self.assertEqual(self.get(b"/nowhere").code, 404)

    def test_head(self) -> None:
        """
        A HEAD request gets the session cookie and no body.
        """
        response = self.get(b"/count", method=b"HEAD")
        self.assertEqual(response.code, 200)
        self.assertIsNotNone(response.cookie())
        self.assertEqual(response.raw.partition(b"\r\n\r\n")[2], b"")

    def test_asynchronousFinish(self) -> None:
        """
        A resource that returns C{NOT_DONE_YET} and finishes later still has
        its session saved, with the cookie in its headers.
        """
        response = self.get(b"/later")
        [request] = self.later.requests
        self.assertEqual(response.raw, b"")
        ISession(request)["done"] = "yes"
        request.write(b"finished")
        request.finish()
        self.assertTrue(response.complete)
        self.assertEqual(response.body, b"finished")
        self.assertEqual(self.stored(response.cookie()), {"done": "yes"})

    def test_changedAfterResponseStarted(self) -> None:
        """
        Changes made after the response began are saved when it finishes.
        """
        cookie = self.get(b"/count").cookie()
        response = self.get(b"/later", b"TLSESSION=" + cookie)
        [request] = self.later.requests
        request.write(b"part one, ")
        ISession(request)["after"] = 1
        request.write(b"part two")
        self.assertNotIn("after", self.stored(cookie))
        request.finish()
        self.assertEqual(self.stored(cookie), {"visits": 1, "after": 1})
        self.assertEqual(response.body, b"part one, part two")

    def test_lateSaveFails(self) -> None:
        """
        When a change made after the response began cannot be saved (the
        session ended meanwhile), the response is cut off rather than
        finished, so that the client does not take it for a success; the
        manager logs why.
        """
        cookie = self.get(b"/count").cookie()
        response = self.get(b"/later", b"TLSESSION=" + cookie)
        [request] = self.later.requests
        request.write(b"streamed")
        self.successResultOf(self.memory.delete(cookie.decode()))
        ISession(request)["after"] = 1
        request.finish()
        self.assertFalse(response.complete)
        self.assertTrue(response.transport.disconnected)
        self.assertEqual((response.code, response.body), (200, b"streamed"))
        self.assertEqual(self.memory.stats()["sessions"], 0)

    def test_lateConflictCutsResponseOff(self) -> None:
        """
        A change made after the response began to a key that another
        request changed meanwhile is not saved over it, and the response is
        cut off (the connection aborted where the transport can).
        """
        cookie = self.get(b"/count").cookie()
        response = self.get(b"/later", b"TLSESSION=" + cookie)
        [request] = self.later.requests
        request.write(b"counting")
        self.get(b"/count", b"TLSESSION=" + cookie)
        ISession(request)["visits"] = ISession(request)["visits"] + 1
        request.finish()
        self.assertFalse(response.complete)
        self.assertTrue(response.transport.disconnected)
        self.assertEqual(self.stored(cookie), {"visits": 2})

    def test_failedRenderSavesNothing(self) -> None:
        """
        A render that raises answers 500 and saves none of its changes.
        """
        cookie = self.get(b"/count").cookie()
        response = self.get(b"/broken", b"TLSESSION=" + cookie)
        self.assertEqual(response.code, 500)
        self.assertEqual(self.stored(cookie), {"visits": 1})
        fresh = self.get(b"/broken")
        self.assertIsNone(fresh.cookie())
        self.assertEqual(self.memory.stats()["sessions"], 1)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 2)

    def test_twistedSessionsStillWork(self) -> None:
        """
        Twisted's own C{request.getSession()} works beside the wrapper.
        """

        class Both(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                ISession(request)["mine"] = True
                return request.getSession().uid

        self.root.putChild(b"both", Both())
        first = self.get(b"/both")
        twisted = first.cookie(b"TWISTED_SESSION")
        self.assertEqual(first.body, twisted)
        self.assertIsNotNone(first.cookie())
        second = self.get(b"/both", b"TWISTED_SESSION=" + twisted)
        self.assertEqual(second.body, twisted)
        self.site.sessions[twisted].expire()

    def test_gzipBelowWrapper(self) -> None:
        """
        A resource wrapped for gzip below the session wrapper is still
        compressed for clients that accept it.
        """
        self.root.putChild(
            b"zipped", EncodingResourceWrapper(Counter(), [GzipEncoderFactory()])
        )
        transport = StringTransport()
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        channel.makeConnection(transport)
        channel.dataReceived(
            b"GET /zipped HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
        )
        response = Response(transport)
        self.assertEqual(response.header(b"content-encoding"), b"gzip")
        self.assertEqual(gzip.decompress(response.body), b"visits=1")
        channel.connectionLost(Failure(ConnectionDone()))

    def test_nestedWrappersCommitOnce(self) -> None:
        """
        A wrapper below another one uses the outer one's session and commit.
        """
        inner = Resource()
        inner.putChild(b"count", Counter())
        self.root.putChild(b"inner", SessionResource(inner, self.manager))
        response = self.get(b"/inner/count")
        self.assertEqual(response.body, b"visits=1")
        self.assertEqual(len(response.headers(b"set-cookie")), 1)

    def test_sessionSite(self) -> None:
        """
        C{sessionSite} builds a site whose resources have sessions.
        """
        site = sessionSite(self.root, self.manager, reactor=self.clock)
        self.assertIsInstance(site.resource, SessionResource)
        self.assertIs(site.resource.wrapped, self.root)
        self.assertIs(site.resource.manager, self.manager)

    def test_putChildGoesToWrapped(self) -> None:
        """
        Children added to the wrapper are added to the wrapped resource, and
        manual traversal keeps sessions.
        """
        self.wrapper.putChild(b"extra", Counter())
        self.assertEqual(self.get(b"/extra").body, b"visits=1")
        child = self.wrapper.getChildWithDefault(b"extra", None)
        self.assertIsInstance(child, SessionResource)


class _Static(Resource):
    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_GET(self, request: Any) -> bytes:
        return self.body


class SlowStoreTests(WebTestCase):
    """
    A store that answers later: the response waits for the session.
    """

    def setUp(self) -> None:
        super().setUp()
        self.slow = DelayedStore(self.memory)
        self.useStore(self.slow)

    def test_headersWaitForCommit(self) -> None:
        """
        Nothing is sent before the session is loaded and, once rendered,
        before the commit has stored it; then the response goes out with
        the cookie.
        """
        first = self.get(b"/count")
        self.assertEqual((first.raw, self.slow.calls), (b"", ["create"]))
        self.slow.release()
        self.assertEqual(first.body, b"visits=1")
        cookie = first.cookie()
        self.assertIsNotNone(cookie)
        second = self.get(b"/count", b"TLSESSION=" + cookie)
        self.assertEqual(second.raw, b"")
        self.slow.release()
        self.assertEqual((second.raw, self.slow.calls[1:]), (b"", ["load", "save"]))
        self.slow.release()
        self.assertEqual(second.body, b"visits=2")
        self.assertEqual(second.cookie(), cookie)

    def test_headHeldWrites(self) -> None:
        """
        A HEAD response whose writes were held during the commit still sends
        no body.
        """
        cookie = self.get(b"/count")
        self.slow.release()
        response = self.get(b"/later", b"TLSESSION=" + cookie.cookie(), method=b"HEAD")
        self.slow.release()
        [request] = self.later.requests
        ISession(request)["x"] = 1
        request.write(b"body one")
        request.write(b"body two")
        request.finish()
        self.slow.release()
        self.assertEqual(response.code, 200)
        self.assertNotIn(b"body", response.raw)

    def test_producerPausedDuringCommit(self) -> None:
        """
        A streaming producer writing the response is paused while its
        session is committed, and resumed after.
        """
        cookie = self.get(b"/count")
        self.slow.release()
        self.slow.release()
        producer = _Producer()
        response = self.get(b"/later", b"TLSESSION=" + cookie.cookie())
        self.slow.release()
        [request] = self.later.requests
        request.registerProducer(producer, True)
        ISession(request)["streaming"] = True
        request.write(b"chunk")
        self.assertEqual(producer.events, ["pause"])
        self.slow.release()
        self.assertEqual(producer.events, ["pause", "resume"])
        request.unregisterProducer()
        request.finish()
        self.assertEqual(response.body, b"chunk")

    def test_clientGoneWhileLoading(self) -> None:
        """
        When the client disconnects before the session is loaded, nothing is
        rendered.
        """
        record = self.successResultOf(self.memory.create(b"{}"))
        transport = StringTransport()
        channel = self.site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5000))
        channel.makeConnection(transport)
        channel.dataReceived(
            b"GET /later HTTP/1.1\r\nHost: x\r\nCookie: TLSESSION="
            + record.sessionID.encode()
            + b"\r\n\r\n"
        )
        self.assertEqual(self.slow.calls, ["load"])
        channel.connectionLost(Failure(ConnectionDone()))
        self.slow.release()
        self.assertEqual(self.later.requests, [])


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.events: List[str] = []

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")

    def stopProducing(self) -> None:
        self.events.append("stop")


class StoreFailureTests(WebTestCase):
    """
    What clients get when the session cannot be loaded or saved.
    """

    def test_storeDownAtLoad(self) -> None:
        """
        When the store cannot be reached the client gets 503 with
        C{Retry-After} at once, and the resource is not rendered.
        """
        self.patch(
            self.memory,
            "load",
            lambda sessionID: _failed(StoreUnavailableError("down")),
        )
        cookie = b"TLSESSION=" + b"a" * 43
        response = self.get(b"/later", cookie)
        self.assertEqual(response.code, 503)
        self.assertEqual(response.header(b"retry-after"), b"7")
        self.assertEqual(response.header(b"content-type"), b"text/plain; charset=utf-8")
        self.assertIn(b"unavailable", response.body)
        self.assertEqual(self.later.requests, [])

    def test_storeDownAtCommit(self) -> None:
        """
        When saving fails because the store went away, the client gets 503
        instead of a response whose session changes were lost.
        """
        self.patch(
            self.memory,
            "create",
            lambda data, idle=None: _failed(StoreUnavailableError("down")),
        )
        response = self.get(b"/count")
        self.assertEqual(response.code, 503)
        self.assertNotIn(b"visits", response.body)
        self.assertIsNone(response.cookie())

    def test_oversizedSession(self) -> None:
        """
        A session grown over the store's limit answers 500 with a message
        saying so, is logged in one line (no traceback), and nothing of it
        is stored.
        """
        self.memory = MemorySessionStore(self.clock, maxValueBytes=1024)
        self.memory.startService()
        self.addCleanup(self.memory.stopService)
        self.useStore(self.memory)

        class Hoarder(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> bytes:
                ISession(request)["everything"] = "x" * 2048
                return b"stored it all"

        self.root.putChild(b"hoard", Hoarder())
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        response = self.get(b"/hoard")
        self.assertEqual(response.code, 500)
        self.assertIn(b"over the size limit", response.body)
        self.assertNotIn(b"stored it all", response.body)
        self.assertIsNone(response.cookie())
        self.assertEqual(self.memory.stats()["sessions"], 0)
        self.assertEqual([e for e in observer if "log_failure" in e], [])
        warnings = [
            e for e in observer if e["log_format"].startswith("Session not saved")
        ]
        self.assertEqual(len(warnings), 1)

    def test_sessionGoneAtCommit(self) -> None:
        """
        When the session was deleted while the request ran (a logout in
        another tab), the client gets 409 and a cleared cookie instead of a
        response claiming a change that was not kept; later writes of the
        resource are ignored.
        """
        cookie = self.get(b"/count").cookie()
        response = self.get(b"/later", b"TLSESSION=" + cookie)
        [request] = self.later.requests
        producer = _Producer()
        request.registerProducer(producer, True)
        request.setETag(b"v1")
        self.successResultOf(self.memory.delete(cookie.decode()))
        ISession(request)["cart"] = ["book"]
        request.write(b"added to your cart")
        request.write(b"more")
        request.finish()
        self.assertEqual(response.code, 409)
        self.assertIn(b"session ended", response.body)
        self.assertNotIn(b"cart", response.body)
        self.assertEqual(response.headers(b"etag"), [])
        self.assertEqual(response.cookie(), b"")
        self.assertEqual(producer.events, ["stop"])
        self.assertEqual(self.memory.stats()["sessions"], 0)

    def test_loadBug(self) -> None:
        """
        A store failing in an unexpected way at load answers 500 and is
        logged.
        """
        self.patch(
            self.memory, "load", lambda sessionID: _failed(ZeroDivisionError("bug"))
        )
        response = self.get(b"/count", b"TLSESSION=" + b"a" * 43)
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_outageLoggedSparingly(self) -> None:
        """
        During an outage one line is logged per ten seconds, with the number
        of requests turned away, and the recovery is logged once.
        """
        events: List[Dict[str, Any]] = []
        self.patch(web, "log", Logger(observer=events.append))
        cookie = b"TLSESSION=" + self.get(b"/count").cookie()
        load = self.memory.load
        self.patch(
            self.memory,
            "load",
            lambda sessionID: _failed(StoreUnavailableError("down")),
        )
        for _ in range(3):
            self.assertEqual(self.get(b"/count", cookie).code, 503)
        self.clock.advance(10)
        self.get(b"/count", cookie)
        self.patch(self.memory, "load", load)
        self.get(b"/count", cookie)
        self.get(b"/count", cookie)
        self.assertEqual(
            [formatEvent(event) for event in events],
            [
                "Answering 503: down (1 request(s) since the last report)",
                "Answering 503: down (3 request(s) since the last report)",
                "The session store answers again",
            ],
        )

    def test_unexpectedCommitError(self) -> None:
        """
        Any other failure to save answers 500 and is logged.
        """
        self.patch(
            self.memory,
            "create",
            lambda data, idle=None: _failed(SessionStoreError("disk on fire")),
        )
        response = self.get(b"/count")
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(SessionStoreError)), 1)


class ConcurrentRequestsTests(WebTestCase):
    """
    Many requests of one session in flight at once: the responses a client
    gets agree with what the session holds.
    """

    REQUESTS = 50

    def concurrentIncrements(self, increment: Callable[[Any], int]) -> List[int]:
        """
        Load L{REQUESTS} requests of one session before any answers, then
        have each count with C{increment} and finish; check that the stored
        count is the number of 200 answers, and return the status codes.
        """
        cookie = self.get(b"/count").cookie()
        responses = [
            self.get(b"/later", b"TLSESSION=" + cookie) for _ in range(self.REQUESTS)
        ]
        self.assertEqual(len(self.later.requests), self.REQUESTS)
        for request in self.later.requests:
            count = increment(ISession(request))
            request.write(b"count=%d" % count)
            request.finish()
        codes = [response.code for response in responses]
        self.assertTrue(all(response.complete for response in responses))
        self.assertEqual(self.stored(cookie)["visits"], 1 + codes.count(200))
        return codes

    def test_plainIncrements(self) -> None:
        """
        Plain C{session[k] = session[k] + 1}: the first to commit is
        answered 200; every other one, whose count was based on a value
        that changed, gets 409 instead of a lie.
        """

        def plain(session: Any) -> int:
            session["visits"] = session["visits"] + 1
            count: int = session["visits"]
            return count

        codes = self.concurrentIncrements(plain)
        self.assertEqual(codes, [200] + [409] * (self.REQUESTS - 1))

    def test_atomicIncrements(self) -> None:
        """
        With C{session.increment}, every request is answered 200 and counts.
        """
        codes = self.concurrentIncrements(lambda s: s.increment("visits"))
        self.assertEqual(codes, [200] * self.REQUESTS)

    def test_conflictMessage(self) -> None:
        """
        The 409 of a conflict says that another request changed the session
        and that nothing of this one was kept.
        """
        cookie = self.get(b"/count").cookie()
        responses = [self.get(b"/later", b"TLSESSION=" + cookie) for _ in range(2)]
        for request in self.later.requests:
            ISession(request)["visits"] = 5
            request.write(b"set to 5")
            request.finish()
        self.assertEqual([r.code for r in responses], [200, 409])
        self.assertIn(b"Another request changed your session", responses[1].body)
        self.assertNotIn(b"set to 5", responses[1].body)


def _failed(error: Exception) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(error)
    return d
