# -*- test-case-name: tests.integration.test_session_daemon -*-
"""
The session daemon as operators run it: C{twistd -n tlsession} on a unix
socket (mode 0600) or TLS, and hosted by C{twistd tlbalance --sessions};
the client store against it, through the conformance suite, a refused
secret, and the daemon killed and restarted while two app processes keep
serving requests.
"""

from __future__ import annotations

import os
import signal
import stat
import time
from typing import Any, Dict, List, Sequence

import pytest
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    UNIXClientEndpoint,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.spread import pb
from twisted.trial.unittest import TestCase

from tests.certs import makeAuthority
from tests.integration._support import (
    LOOPBACK,
    TWISTD,
    PeerProcess,
    freePort,
    runProgram,
    sleep,
    startPeer,
    temporaryDirectory,
    waitUntil,
)
from tests.sessionstore_conformance import SessionStoreConformance
from tlsession._wire import SECRET_USERNAME, wireSecurity
from tlsession.daemon import SessionDaemonService
from tlsession.interfaces import ConflictError, StoreUnavailableError
from tlsession.stores.memory import MemorySessionStore
from tlsession.stores.pb import PBSessionStore

pytestmark = pytest.mark.integration

SECRET = b"integration-test-secret-0123456789"


def writeSecret(directory: str, mode: int = 0o600) -> str:
    """
    The shared secret in C{directory}, with C{mode}.
    """
    path = os.path.join(directory, "secret")
    with open(path, "wb") as f:
        f.write(SECRET + b"\n")
    os.chmod(path, mode)
    return path


def quickRetries(attempt: int) -> float:
    """
    Reconnect every 0.2 s: tests wait for recovery, not for backoff.
    """
    return 0.2


def startStore(
    testCase: TestCase, endpoint: Any, reactor: Any, clock: Any = None, **kwargs: Any
) -> PBSessionStore:
    """
    A started client store, stopped after the test; session times by
    C{clock} (the reactor's unless given).
    """
    kwargs.setdefault("retryPolicy", quickRetries)
    secret = kwargs.pop("secret", SECRET)
    store = PBSessionStore(
        endpoint, secret, clock or reactor, reactor=reactor, **kwargs
    )
    store.startService()
    testCase.addCleanup(store.stopService)
    return store


class InProcessConformanceTests(SessionStoreConformance, TestCase):
    """
    The client store passes the conformance suite against a daemon in the
    test's reactor, over a real unix socket; session times come from the
    suite's clock on both sides.
    """

    def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> Any:
        reactor = self.reactor()
        path = os.path.join(temporaryDirectory(self), "daemon.sock")
        store = MemorySessionStore(
            clock,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )
        daemon = SessionDaemonService(
            store, SECRET, [f"unix:{path}:mode=600"], clock, reactor, statsInterval=0
        )
        daemon.startService()
        self.addCleanup(daemon.stopService)
        # Session times by the suite's clock; connections by the reactor.
        return PBSessionStore(
            f"unix:path={path}",
            SECRET,
            clock,
            reactor=reactor,
            retryPolicy=quickRetries,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )

    def whenStoreReady(self, store: PBSessionStore) -> Any:
        """
        Wait for the client to log in.
        """
        return store.whenConnected(failAfterFailures=3)

    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor


class TLSTests(TestCase):
    """
    The daemon serves clients over TLS too.
    """

    async def test_tls(self) -> None:
        """
        A daemon on C{ssl:} serves a client that verifies its certificate.
        """
        from twisted.internet import reactor

        directory = temporaryDirectory(self)
        authority = makeAuthority()
        issued = authority.issue("localhost", ipAddresses=[LOOPBACK])
        keyPath = os.path.join(directory, "key.pem")
        certPath = os.path.join(directory, "cert.pem")
        with open(keyPath, "wb") as f:
            f.write(issued.keyPEM)
        with open(certPath, "wb") as f:
            f.write(issued.certPEM)
        store = MemorySessionStore(reactor)
        daemon = SessionDaemonService(
            store,
            SECRET,
            [f"ssl:0:interface={LOOPBACK}:privateKey={keyPath}:certKey={certPath}"],
            reactor,
            reactor,
            statsInterval=0,
        )
        daemon.startService()
        self.addCleanup(daemon.stopService)
        port = daemon.listeners[0].port
        assert port is not None
        endpoint = wrapClientTLS(
            optionsForClientTLS(
                "localhost", trustRoot=Certificate.loadPEM(authority.certPEM)
            ),
            TCP4ClientEndpoint(reactor, LOOPBACK, port.getHost().port),  # type: ignore[attr-defined]
        )
        client = startStore(self, endpoint, reactor)
        await client.whenConnected(failAfterFailures=3)
        record = await client.create(b"over tls")
        other = startStore(self, endpoint, reactor)
        await other.whenConnected(failAfterFailures=3)
        loaded = await other.load(record.sessionID)
        self.assertEqual(loaded.data, b"over tls")


class TwistdDaemonTests(TestCase):
    """
    C{twistd -n tlsession} as a real process.
    """

    timeout = 90

    def setUp(self) -> None:
        from twisted.internet import reactor

        self.reactor = reactor
        self.directory = temporaryDirectory(self)
        self.secretPath = writeSecret(self.directory)
        self.socketPath = os.path.join(self.directory, "daemon.sock")

    def arguments(self, *extra: str) -> List[str]:
        """
        The command line of C{twistd -n tlsession} with C{extra}.
        """
        return [*TWISTD, "-n", "--pidfile=", "tlsession", *extra]

    async def startDaemon(self, *extra: str) -> PeerProcess:
        """
        Run the daemon on the test's unix socket and wait until it listens.
        """
        process = startPeer(
            self,
            "tlsession",
            self.arguments(
                "--listen",
                f"unix:{self.socketPath}",
                "--secret-file",
                self.secretPath,
                *extra,
            ),
            os.path.join(self.directory, "daemon.log"),
            cwd=self.directory,
        )
        await process.listening(self.socketPath, timeout=30)
        return process

    def store(self, **kwargs: Any) -> PBSessionStore:
        """
        A client store of the daemon on the unix socket.
        """
        kwargs.setdefault("callTimeout", 2.0)
        return startStore(self, f"unix:path={self.socketPath}", self.reactor, **kwargs)

    async def test_unixSocketPrivate(self) -> None:
        """
        The daemon's unix socket is made mode 0600, and serves clients with
        the secret.
        """
        await self.startDaemon()
        mode = os.stat(self.socketPath).st_mode
        self.assertTrue(stat.S_ISSOCK(mode))
        self.assertEqual(stat.S_IMODE(mode), 0o600)
        store = await self.store().whenConnected(failAfterFailures=3)
        record = await store.create(b"hello")
        self.assertEqual((await store.load(record.sessionID)).data, b"hello")

    async def test_wrongOrNoSecret(self) -> None:
        """
        A login with a wrong secret or none is refused and the connection
        closed; a client store with the wrong secret never connects.
        """
        await self.startDaemon()
        for credentials in [
            UsernamePassword(SECRET_USERNAME, b"wrong-secret-wrong-secret"),
            UsernamePassword(SECRET_USERNAME, b""),
        ]:
            factory = pb.PBClientFactory(security=wireSecurity())
            broker = await UNIXClientEndpoint(self.reactor, self.socketPath).connect(
                factory
            )
            refusals: List[Failure] = []
            await factory.login(credentials).addErrback(refusals.append)
            self.assertTrue(refusals[0].check(UnauthorizedLogin), refusals)
            await waitUntil(
                lambda b=broker: bool(b.disconnected), 5, "the daemon closing"
            )
        anonymous = pb.PBClientFactory(security=wireSecurity())
        await UNIXClientEndpoint(self.reactor, self.socketPath).connect(anonymous)
        root = await anonymous.getRootObject()
        with self.assertRaises(Exception) as refused:
            await root.callRemote("loginAnonymous", None)
        self.assertIn("login refused", str(refused.exception))

        wrong = self.store(secret=b"wrong-secret-wrong-secret")
        with self.assertRaises(StoreUnavailableError) as failed:
            await wrong.whenConnected(failAfterFailures=1)
        self.assertIn("refused the secret", str(failed.exception))
        with self.assertRaises(StoreUnavailableError):
            await wrong.create()

    async def test_insecureRule(self) -> None:
        """
        A plain TCP listener is refused at start-up, naming C{--insecure};
        with it, the daemon serves a client that allows plain TCP too.
        """
        port = freePort()
        listen = f"tcp:{port}:interface={LOOPBACK}"
        refused = await runProgram(
            self.arguments("--listen", listen, "--secret-file", self.secretPath),
            cwd=self.directory,
        )
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("pass --insecure to allow it", refused.stderr + refused.stdout)

        process = startPeer(
            self,
            "tlsession",
            self.arguments(
                "--listen", listen, "--secret-file", self.secretPath, "--insecure"
            ),
            os.path.join(self.directory, "insecure.log"),
            cwd=self.directory,
        )
        await process.listening((LOOPBACK, port), timeout=30)
        store = startStore(
            self, f"tcp:host={LOOPBACK}:port={port}", self.reactor, insecure=True
        )
        await store.whenConnected(failAfterFailures=3)
        self.assertEqual((await store.create(b"plain")).data, b"plain")

    async def test_secretFileRefused(self) -> None:
        """
        A secret file its group can read stops start-up with the fix.
        """
        os.chmod(self.secretPath, 0o640)
        result = await runProgram(
            self.arguments(
                "--listen", f"unix:{self.socketPath}", "--secret-file", self.secretPath
            ),
            cwd=self.directory,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(
            f"make it private with: chmod 600 {self.secretPath}",
            result.stderr + result.stdout,
        )
        self.assertFalse(os.path.exists(self.socketPath))

    async def test_killedAndRestartedUnderLoad(self) -> None:
        """
        Two app processes serve requests in a loop while the daemon is
        killed and restarted: while it is down every session call fails at
        once with L{StoreUnavailableError}; once it is back both recover on
        their own, old sessions are gone and new ones work.
        """
        daemon = await self.startDaemon()
        apps = [self.store(), self.store()]
        for app in apps:
            await app.whenConnected(failAfterFailures=3)

        # The two processes share sessions, and see each other's writes as
        # soon as the daemon's push arrives.
        shared = await apps[0].create(b"0")
        await apps[1].load(shared.sessionID)
        await apps[0].save(shared.sessionID, 1, b"1")
        await waitUntil(
            lambda: apps[1].stats()["invalidations"] == 1, 5, "the push arriving"
        )
        self.assertEqual((await apps[1].load(shared.sessionID)).data, b"1")

        load = _Load(apps, workersPerApp=4)
        load.start()
        self.addCleanup(load.stop)
        await waitUntil(lambda: load.ok >= 200, 20, "requests before the kill")
        before = load.sessionsSeen()

        daemon.signal(signal.SIGKILL)
        await daemon.exited(10)
        await waitUntil(
            lambda: not any(app.connected for app in apps), 5, "both apps noticing"
        )
        load.resetFailureTimes()
        okWhileDown = load.ok
        failedWhileDown = load.unavailable
        await sleep(1.0)
        self.assertEqual(load.ok, okWhileDown)
        self.assertGreater(load.unavailable - failedWhileDown, 50)
        self.assertLess(max(load.failureTimes), 0.5)
        for app in apps:
            with self.assertRaises(StoreUnavailableError):
                await app.load(shared.sessionID)

        await self.startDaemon()
        await waitUntil(
            lambda: all(app.connected for app in apps), 20, "both apps reconnecting"
        )
        okAfterRestart = load.ok
        await waitUntil(
            lambda: load.ok >= okAfterRestart + 200, 20, "requests after the restart"
        )
        await load.stop()
        self.assertEqual(load.errors, [])
        for app in apps:
            self.assertIsNone(await app.load(shared.sessionID))
            for sessionID in before:
                self.assertIsNone(await app.load(sessionID))
        fresh = await apps[1].create(b"after")
        self.assertEqual((await apps[0].load(fresh.sessionID)).data, b"after")


class _Load:
    """
    Request loops against the app stores: each worker keeps a session and
    bumps a counter in it, as a page counting visits would.

    @ivar ok: requests served.
    @ivar unavailable: requests that failed with L{StoreUnavailableError}.
    @ivar failureTimes: how long each of those took, in seconds.
    @ivar errors: anything else that went wrong.
    """

    def __init__(self, apps: Sequence[PBSessionStore], workersPerApp: int) -> None:
        self.apps = apps
        self.workersPerApp = workersPerApp
        self.ok = 0
        self.unavailable = 0
        self.failureTimes: List[float] = [0.0]
        self.errors: List[str] = []
        self.sessions: List[Dict[str, Any]] = []
        self.running = False
        self._done: List[Any] = []

    def start(self) -> None:
        """
        Start every worker.
        """
        from twisted.internet.defer import ensureDeferred

        self.running = True
        for app in self.apps:
            for _ in range(self.workersPerApp):
                state: Dict[str, Any] = {}
                self.sessions.append(state)
                self._done.append(ensureDeferred(self._worker(app, state)))

    async def stop(self) -> None:
        """
        Stop the workers and wait for them.
        """
        self.running = False
        done, self._done = self._done, []
        for worker in done:
            await worker

    def resetFailureTimes(self) -> None:
        """
        Forget failure times so far (those of calls in flight at the kill).
        """
        self.failureTimes = [0.0]

    def sessionsSeen(self) -> List[str]:
        """
        The sessions the workers use now.
        """
        return [state["sessionID"] for state in self.sessions if "sessionID" in state]

    async def _worker(self, app: PBSessionStore, state: Dict[str, Any]) -> None:
        while self.running:
            started = time.monotonic()
            try:
                await self._request(app, state)
            except StoreUnavailableError:
                self.unavailable += 1
                self.failureTimes.append(time.monotonic() - started)
                await sleep(0.01)
            except Exception as e:
                self.errors.append(repr(e))
                await sleep(0.01)
            else:
                self.ok += 1
                await sleep(0.002)

    async def _request(self, app: PBSessionStore, state: Dict[str, Any]) -> None:
        record = None
        if "sessionID" in state:
            record = await app.load(state["sessionID"])
        if record is None:
            record = await app.create(b"0")
            state["sessionID"] = record.sessionID
        visits = int(record.data or b"0") + 1
        try:
            await app.save(record.sessionID, record.version, str(visits).encode())
        except ConflictError:
            # Another request of the same session won: a normal outcome.
            pass


class EmbeddedDaemonTests(TestCase):
    """
    C{twistd tlbalance --sessions} hosts the daemon in the balancer.
    """

    timeout = 60

    async def test_hostedByTheBalancer(self) -> None:
        """
        The balancer relays, and serves sessions on its private unix socket.
        """
        from twisted.internet import reactor

        directory = temporaryDirectory(self)
        secretPath = writeSecret(directory)
        socketPath = os.path.join(directory, "sessions.sock")
        backend = await serverFromString(reactor, f"tcp:0:interface={LOOPBACK}").listen(
            Factory.forProtocol(Protocol)
        )
        self.addCleanup(backend.stopListening)
        port = freePort()
        process = startPeer(
            self,
            "tlbalance",
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                "tlbalance",
                "--listen",
                f"tcp:{port}:interface={LOOPBACK}",
                "--backend",
                f"{LOOPBACK}:{backend.getHost().port}",  # type: ignore[attr-defined]
                "--sessions",
                f"unix:{socketPath}",
                "--secret-file",
                secretPath,
            ],
            os.path.join(directory, "tlbalance.log"),
            cwd=directory,
        )
        await process.listening((LOOPBACK, port), timeout=30)
        await process.listening(socketPath, timeout=10)
        self.assertEqual(stat.S_IMODE(os.stat(socketPath).st_mode), 0o600)
        store = startStore(self, f"unix:path={socketPath}", reactor)
        await store.whenConnected(failAfterFailures=3)
        record = await store.create(b"hosted")
        self.assertEqual((await store.load(record.sessionID)).data, b"hosted")
        stats = await store.daemonStats()
        self.assertEqual((stats["sessions"], stats["clients"]), (1, 1))

        process.signal(signal.SIGTERM)
        await process.exited(20)
        self.assertIn("tlsession: 1 sessions", process.output())
