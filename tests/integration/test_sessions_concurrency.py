"""
Many HTTP requests of one session at once, over real sockets: every request
answered 200 counted, whichever store and however many app processes, and
atomic increments all succeed.
"""

from __future__ import annotations

import json
import os
from typing import Any, List, Tuple

import pytest
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from tests.integration._support import (
    LOOPBACK,
    reactor,
    responseBody,
    temporaryDirectory,
)
from tlsession import ISession, MemorySessionStore, SessionManager, sessionSite
from tlsession.daemon import SessionDaemonService
from tlsession.stores.pb import PBSessionStore

pytestmark = pytest.mark.integration

#: Concurrent requests of one session.
REQUESTS = 50

SECRET = b"concurrency-test-secret-0123456789"


class Counter(Resource):
    """
    Counts in the session under C{n}: C{?how=atomic} with
    C{session.increment}, otherwise by assigning the value read plus one.
    With C{hold}, requests wait until that many have arrived (each loaded
    its session), then all count at once.
    """

    isLeaf = True

    def __init__(self, hold: int = 0) -> None:
        super().__init__()
        self.hold = hold
        self.waiting: List[Any] = []

    def render_GET(self, request: Any) -> Any:
        ISession(request)  # loaded already
        self.waiting.append(request)
        if len(self.waiting) >= self.hold:
            waiting, self.waiting = self.waiting, []
            for held in waiting:
                # A turn of the reactor in between, so that requests in
                # several processes overlap even without a hold.
                reactor.callLater(0, self.count, held)
        return NOT_DONE_YET

    def count(self, request: Any) -> None:
        session = ISession(request)
        if request.args.get(b"how") == [b"atomic"]:
            value = session.increment("n")
        else:
            session["n"] = session.get("n", 0) + 1
            value = session["n"]
        request.write(b"%d" % value)
        request.finish()


class ConcurrentIncrementTests(TestCase):
    """
    L{REQUESTS} requests of one session in flight together, against sites
    sharing a store.
    """

    async def serve(self, store: Any, hold: int) -> Tuple[str, Counter]:
        """
        A site over C{store} on loopback: its URL and its counter.
        """
        counter = Counter(hold)
        root = Resource()
        root.putChild(b"count", counter)
        site = sessionSite(root, SessionManager(store, reactor))
        site.noisy = False
        endpoint = TCP4ServerEndpoint(reactor, 0, interface=LOOPBACK)
        port = await endpoint.listen(site)
        self.addCleanup(port.stopListening)
        return f"http://{LOOPBACK}:{port.getHost().port}", counter

    async def daemonStores(self, count: int) -> Tuple[MemorySessionStore, List[Any]]:
        """
        A session daemon on a unix socket and C{count} client stores of it
        (one per app process); the daemon's own store, to read.
        """
        path = os.path.join(temporaryDirectory(self), "daemon.sock")
        memory = MemorySessionStore(reactor)
        daemon = SessionDaemonService(
            memory, SECRET, [f"unix:{path}:mode=600"], reactor, reactor, statsInterval=0
        )
        daemon.startService()
        self.addCleanup(daemon.stopService)
        clients = []
        for _ in range(count):
            client = PBSessionStore(
                f"unix:path={path}", SECRET, reactor, reactor=reactor
            )
            client.startService()
            self.addCleanup(client.stopService)
            await client.whenConnected(failAfterFailures=3)
            clients.append(client)
        return memory, clients

    async def increments(
        self, urls: List[str], how: str, memory: MemorySessionStore
    ) -> List[int]:
        """
        Start a session, send L{REQUESTS} requests of it at once, spread
        over C{urls}, and check that the stored count is the number of 200
        answers; return the status codes.
        """
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent(reactor, pool=pool, connectTimeout=5)
        record = await memory.create(b"{}")
        cookie = b"TLSESSION=" + record.sessionID.encode("ascii")

        async def get(url: str) -> int:
            d = agent.request(
                b"GET",
                f"{url}/count?how={how}".encode("ascii"),
                Headers({b"cookie": [cookie]}),
            )
            d.addTimeout(30, reactor)
            response = await d
            await responseBody(response)
            code: int = response.code
            return code

        results = await DeferredList(
            [
                Deferred.fromCoroutine(get(urls[index % len(urls)]))
                for index in range(REQUESTS)
            ],
            fireOnOneErrback=True,
            consumeErrors=True,
        )
        codes = [code for _, code in results]
        self.assertEqual(set(codes) - {200, 409}, set())
        stored = await memory.load(record.sessionID)
        self.assertEqual(json.loads(stored.data).get("n", 0), codes.count(200))
        return codes

    async def test_plainOneProcess(self) -> None:
        """
        One process, every request loaded before any counts: the first
        assignment is answered 200 and every other, based on a value that
        changed meanwhile, 409.
        """
        memory = MemorySessionStore(reactor)
        memory.startService()
        self.addCleanup(memory.stopService)
        url, _ = await self.serve(memory, hold=REQUESTS)
        codes = await self.increments([url], "plain", memory)
        self.assertEqual(codes.count(200), 1)

    async def test_atomicOneProcess(self) -> None:
        """
        One process, every request loaded before any counts: every
        C{increment} is answered 200 and counted.
        """
        memory = MemorySessionStore(reactor)
        memory.startService()
        self.addCleanup(memory.stopService)
        url, _ = await self.serve(memory, hold=REQUESTS)
        codes = await self.increments([url], "atomic", memory)
        self.assertEqual(codes, [200] * REQUESTS)

    async def test_plainTwoProcessesThroughDaemon(self) -> None:
        """
        Two app processes sharing the session daemon, requests arriving as
        they come: the stored count is exactly the number of 200 answers.
        """
        memory, clients = await self.daemonStores(2)
        urls = [(await self.serve(client, hold=0))[0] for client in clients]
        codes = await self.increments(urls, "plain", memory)
        self.assertGreaterEqual(codes.count(200), 1)

    async def test_atomicTwoProcessesThroughDaemon(self) -> None:
        """
        Two app processes sharing the session daemon, every request loaded
        before any counts: (nearly) every C{increment} is answered 200, and
        each 200 counted.
        """
        memory, clients = await self.daemonStores(2)
        urls = [(await self.serve(client, hold=REQUESTS // 2))[0] for client in clients]
        codes = await self.increments(urls, "atomic", memory)
        self.assertGreaterEqual(codes.count(200), REQUESTS - 2)
