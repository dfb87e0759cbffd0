"""
Tests for L{tlsession.manager}: sessions for requests, commit and merge,
rotation, logout and the cookie policy, over a memory store and a clock.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel
from zope.interface.verify import verifyObject

from tlsession import ISession, ISessionManager, NoSessionError
from tlsession.interfaces import ConflictError, StoreUnavailableError
from tlsession.manager import SessionCommitError, SessionManager
from tlsession.session import Session
from tlsession.stores import newSessionID
from tlsession.stores.memory import MemorySessionStore

IDLE = 1800.0
ABSOLUTE = 86400.0


def makeRequest(*cookies: bytes, secure: bool = False) -> Request:
    """
    A real twisted.web request that has not started its response, carrying
    the given C{Cookie} headers.
    """
    channel = DummyChannel()
    if secure:
        channel.transport = DummyChannel.SSL()
    request = Request(channel)
    request.method = b"GET"
    request.uri = request.path = b"/"
    request.clientproto = b"HTTP/1.1"
    for cookie in cookies:
        request.requestHeaders.addRawHeader(b"cookie", cookie)
    return request


def setCookies(request: Request) -> List[Tuple[bytes, bytes, Dict[bytes, bytes]]]:
    """
    The response's cookies as (name, value, attributes), attribute names
    lower-cased, flags mapped to C{b""}.
    """
    result = []
    for line in request.cookies:
        first, *rest = line.split(b"; ")
        name, _, value = first.partition(b"=")
        attributes = {}
        for part in rest:
            key, _, attributeValue = part.partition(b"=")
            attributes[key.lower()] = attributeValue
        result.append((name, value, attributes))
    return result


def vary(request: Request) -> List[bytes]:
    """
    The response's C{Vary} header values.
    """
    return request.responseHeaders.getRawHeaders(b"vary", [])


def commitOutcome(
    testCase: SynchronousTestCase, manager: SessionManager, request: Request
) -> str:
    """
    Commit C{request}'s session, which must end at once: C{"saved"}, or the
    reason of its L{SessionCommitError}.
    """
    d = manager.commit(request)
    results: List[Any] = []
    d.addBoth(results.append)
    testCase.assertEqual(len(results), 1, "the commit did not end at once")
    [result] = results
    if isinstance(result, Failure):
        result.trap(SessionCommitError)
        reason: str = result.value.reason
        return reason
    return "saved"


class ManagerTestCase(SynchronousTestCase):
    """
    A manager over a memory store, both on one clock.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = MemorySessionStore(
            self.clock, idleTimeout=IDLE, absoluteTimeout=ABSOLUTE
        )
        self.store.startService()
        self.addCleanup(self.store.stopService)
        self.manager = self.makeManager()
        self.events: List[Dict[str, Any]] = []
        self.manager.log = Logger(observer=self.events.append)

    def makeManager(self, **kwargs: Any) -> SessionManager:
        """
        A manager over the test's store and clock, with C{kwargs} settings.
        """
        return SessionManager(self.store, self.clock, **kwargs)

    def session(
        self, request: Request, create: bool = True, manager: Any = None
    ) -> Optional[Session]:
        """
        The session C{manager} (the test's by default) gives C{request}.
        """
        manager = manager or self.manager
        return self.successResultOf(manager.sessionForRequest(request, create))

    def commit(self, request: Request, manager: Any = None) -> None:
        """
        Commit C{request}'s session, which must succeed.
        """
        self.successResultOf((manager or self.manager).commit(request))

    def startSession(self, **values: Any) -> str:
        """
        Store a session holding C{values} through a request, and return its
        identifier.
        """
        request = makeRequest()
        session = self.session(request)
        session.update(values)
        self.commit(request)
        return session.sessionID

    def cookieFor(self, sessionID: str, name: bytes = b"TLSESSION") -> bytes:
        """
        The C{Cookie} header value naming C{sessionID}.
        """
        return name + b"=" + sessionID.encode("ascii")

    def logged(self) -> str:
        """
        Everything the manager logged, as text.
        """
        return "\n".join(formatEvent(event) for event in self.events)


class CookiePolicyTests(ManagerTestCase):
    """
    The cookie a client receives.
    """

    def test_plainHTTP(self) -> None:
        """
        Over HTTP the cookie is C{TLSESSION}, C{HttpOnly}, C{SameSite=lax},
        C{Path=/}, with the idle timeout as C{Max-Age}, no C{Domain} and no
        C{Secure}; the response varies on C{Cookie}.
        """
        request = makeRequest()
        session = self.session(request)
        session["visits"] = 1
        self.commit(request)
        [(name, value, attributes)] = setCookies(request)
        self.assertEqual(name, b"TLSESSION")
        self.assertEqual(value.decode("ascii"), session.sessionID)
        self.assertEqual(
            attributes,
            {b"path": b"/", b"max-age": b"1800", b"httponly": b"", b"samesite": b"lax"},
        )
        self.assertEqual(vary(request), [b"Cookie"])

    def test_tls(self) -> None:
        """
        Over TLS the cookie is C{__Host-TLSESSION} and C{Secure}, which the
        prefix requires along with C{Path=/} and no C{Domain}.
        """
        request = makeRequest(secure=True)
        self.session(request)["visits"] = 1
        self.commit(request)
        [(name, _, attributes)] = setCookies(request)
        self.assertEqual(name, b"__Host-TLSESSION")
        self.assertIn(b"secure", attributes)
        self.assertEqual(attributes[b"path"], b"/")
        self.assertNotIn(b"domain", attributes)

    def test_tlsAndPlainAreSeparate(self) -> None:
        """
        A TLS request does not read the plain-HTTP cookie, nor the reverse.
        """
        sessionID = self.startSession(user="alice")
        request = makeRequest(self.cookieFor(sessionID), secure=True)
        self.assertTrue(self.session(request).isNew)
        request = makeRequest(self.cookieFor(sessionID, b"__Host-TLSESSION"))
        self.assertTrue(self.session(request).isNew)

    def test_forceSecure(self) -> None:
        """
        With C{forceSecure} (TLS ended in front of the site), plain requests
        get the secure cookie.
        """
        manager = self.makeManager(forceSecure=True)
        request = makeRequest()
        self.session(request, manager=manager)["a"] = 1
        self.commit(request, manager)
        [(name, _, attributes)] = setCookies(request)
        self.assertEqual(name, b"__Host-TLSESSION")
        self.assertIn(b"secure", attributes)

    def test_configurable(self) -> None:
        """
        The names, C{SameSite} and persistence of the cookie are settings; a
        browser-session cookie has no C{Max-Age}.
        """
        manager = self.makeManager(
            cookieName=b"sid", sameSite="strict", persistentCookie=False
        )
        request = makeRequest()
        self.session(request, manager=manager)["a"] = 1
        self.commit(request, manager)
        [(name, _, attributes)] = setCookies(request)
        self.assertEqual((name, attributes[b"samesite"]), (b"sid", b"strict"))
        self.assertNotIn(b"max-age", attributes)

    def test_maxAgeWithinAbsoluteTimeout(self) -> None:
        """
        Near the end of its absolute lifetime, the cookie lives only as long
        as the session can.
        """
        self.store = MemorySessionStore(
            self.clock, idleTimeout=6000, absoluteTimeout=6000
        )
        self.store.startService()
        self.addCleanup(self.store.stopService)
        manager = self.makeManager()
        first = makeRequest()
        self.session(first, manager=manager)["a"] = 1
        self.commit(first, manager)
        self.clock.advance(5900)
        request = makeRequest(self.cookieFor(ISession(first).sessionID))
        self.session(request, manager=manager)["a"] = 2
        self.commit(request, manager)
        [(_, _, attributes)] = setCookies(request)
        self.assertEqual(attributes[b"max-age"], b"100")

    def test_badSettings(self) -> None:
        """
        Invalid cookie names, a prefixed name for plain HTTP and an unknown
        C{SameSite} are refused.
        """
        for bad in [
            {"cookieName": b"a b"},
            {"cookieName": "text"},
            {"secureCookieName": b"x;y"},
            {"cookieName": b"__Host-sid"},
            {"sameSite": "sometimes"},
            {"maxRetries": -1},
            {"storeTimeout": 0},
        ]:
            self.assertRaises(ValueError, self.makeManager, **bad)

    def test_interface(self) -> None:
        """
        The manager provides L{ISessionManager}, and runs on the global
        reactor's clock unless given one.
        """
        from twisted.internet import reactor

        self.assertTrue(verifyObject(ISessionManager, self.manager))
        self.assertEqual(self.manager.cookieName, b"TLSESSION")
        self.assertIs(SessionManager(self.store).clock, reactor)


class LoadingTests(ManagerTestCase):
    """
    Which session a request gets.
    """

    def test_registeredForAdaptation(self) -> None:
        """
        The loaded session is what C{ISession(request)} gives, and loading
        again gives the same object.
        """
        sessionID = self.startSession(user="alice")
        request = makeRequest(self.cookieFor(sessionID))
        session = self.session(request)
        self.assertIs(ISession(request), session)
        self.assertIs(self.session(request), session)
        self.assertEqual(session["user"], "alice")

    def test_noSessionLoaded(self) -> None:
        """
        C{ISession(request)} on a request without a session raises a clear
        error.
        """
        error = self.assertRaises(NoSessionError, ISession, makeRequest())
        self.assertIn("SessionResource", str(error))

    def test_newSessionIsLazy(self) -> None:
        """
        A new session that is never written is not stored and sets no
        cookie; one that is read makes the response vary on C{Cookie}.
        """
        request = makeRequest()
        session = self.session(request)
        self.assertTrue(session.isNew)
        self.assertIsNone(session.get("anything"))
        self.commit(request)
        self.assertEqual(request.cookies, [])
        self.assertEqual(self.store.stats()["creates"], 0)
        self.assertEqual(vary(request), [b"Cookie"])

    def test_untouchedSessionDoesNotVary(self) -> None:
        """
        A response whose session the application never looked at does not
        vary on C{Cookie}, so caches may share it.
        """
        request = makeRequest()
        self.session(request)
        self.commit(request)
        self.assertEqual(vary(request), [])

    def test_varyMerged(self) -> None:
        """
        C{Cookie} joins an existing C{Vary} header once.
        """
        request = makeRequest()
        request.responseHeaders.addRawHeader(b"vary", b"Accept-Encoding")
        self.session(request)["a"] = 1
        self.commit(request)
        self.commit(request)
        self.assertEqual(vary(request), [b"Accept-Encoding", b"Cookie"])

    def test_junkCookiesIgnored(self) -> None:
        """
        Cookies that are not one well-formed identifier (too long, wrong
        alphabet, not ASCII, or several of them) are not looked up, and the
        session written afterwards gets a fresh identifier.
        """
        good = self.startSession(user="alice")
        loadsBefore = self.store.stats()["loads"]
        junk = [
            [b"TLSESSION=" + b"a" * 5000],
            [b"TLSESSION=" + good[:-1].encode() + b"*"],
            [b"TLSESSION=" + good[:-1].encode() + b"\xc3\xa9"],
            [b"TLSESSION=" + good.encode() + b"; TLSESSION=" + good.encode()],
            [b"TLSESSION=" + good.encode(), b"TLSESSION=" + newSessionID().encode()],
            [b"TLSESSION"],
        ]
        for cookies in junk:
            request = makeRequest(*cookies)
            session = self.session(request)
            self.assertTrue(session.isNew, cookies)
            session["x"] = 1
            self.commit(request)
            self.assertNotEqual(session.sessionID, good)
        self.assertEqual(self.store.stats()["loads"], loadsBefore)

    def test_unknownIdentifierNotAdopted(self) -> None:
        """
        A well-formed identifier the store does not hold gives a new session
        under a new identifier; the client's is never used.
        """
        unknown = newSessionID()
        request = makeRequest(self.cookieFor(unknown))
        session = self.session(request)
        self.assertTrue(session.isNew)
        session["x"] = 1
        self.commit(request)
        self.assertNotEqual(session.sessionID, unknown)
        self.assertIsNone(self.successResultOf(self.store.load(unknown)))
        [(_, value, _)] = setCookies(request)
        self.assertEqual(value.decode(), session.sessionID)

    def test_withoutCreate(self) -> None:
        """
        With C{create=False} a request without a live session gets C{None}
        and no session is registered.
        """
        for request in [makeRequest(), makeRequest(self.cookieFor(newSessionID()))]:
            self.assertIsNone(self.session(request, create=False))
            self.assertRaises(NoSessionError, ISession, request)
        sessionID = self.startSession(a=1)
        request = makeRequest(self.cookieFor(sessionID))
        self.assertEqual(self.session(request, create=False)["a"], 1)

    def test_cookieAmongOthers(self) -> None:
        """
        The session cookie is found among the client's other cookies.
        """
        sessionID = self.startSession(a=1)
        request = makeRequest(
            b"theme=dark; " + self.cookieFor(sessionID) + b"; lang=fr",
            b"other=1",
        )
        self.assertEqual(self.session(request)["a"], 1)


class ExpiryTests(ManagerTestCase):
    """
    Idle and absolute expiry, and how requests keep a session alive.
    """

    def test_idleExpiry(self) -> None:
        """
        A session not used for longer than the idle timeout is gone: the
        next request gets a new one.
        """
        sessionID = self.startSession(user="alice")
        self.clock.advance(IDLE + 1)
        request = makeRequest(self.cookieFor(sessionID))
        session = self.session(request)
        self.assertTrue(session.isNew)
        self.assertNotIn("user", session)

    def test_readingRequestsKeepItAlive(self) -> None:
        """
        Requests that only read the session still restart its idle timeout,
        touching the store at most once per C{touchInterval} and refreshing
        the cookie when they do.
        """
        sessionID = self.startSession(user="alice")
        touches = []
        refreshed = []
        for _ in range(20):
            self.clock.advance(IDLE / 4)
            request = makeRequest(self.cookieFor(sessionID))
            self.assertEqual(self.session(request)["user"], "alice")
            self.commit(request)
            touches.append(self.store.stats()["touches"])
            refreshed.append(len(request.cookies))
        self.assertEqual(touches, list(range(1, 21)))
        self.assertEqual(set(refreshed), {1})

    def test_touchInterval(self) -> None:
        """
        Within C{touchInterval} of the last write, requests do not write to
        the store at all.
        """
        manager = self.makeManager(touchInterval=60)
        sessionID = self.startSession(user="alice")
        for _ in range(5):
            self.clock.advance(10)
            request = makeRequest(self.cookieFor(sessionID))
            self.session(request, manager=manager)
            self.commit(request, manager)
            self.assertEqual(request.cookies, [])
        self.assertEqual(self.store.stats()["touches"], 0)
        self.clock.advance(15)
        request = makeRequest(self.cookieFor(sessionID))
        self.session(request, manager=manager)
        self.commit(request, manager)
        self.assertEqual(self.store.stats()["touches"], 1)

    def test_absoluteExpiry(self) -> None:
        """
        However active, a session ends at the absolute timeout.
        """
        sessionID = self.startSession(user="alice")
        while self.clock.seconds() < 1_000_000 + ABSOLUTE - IDLE / 2:
            self.clock.advance(IDLE / 2)
            request = makeRequest(self.cookieFor(sessionID))
            self.assertFalse(self.session(request).isNew)
            self.commit(request)
        self.clock.advance(IDLE / 2)
        request = makeRequest(self.cookieFor(sessionID))
        self.assertTrue(self.session(request).isNew)

    def test_setExpiry(self) -> None:
        """
        C{setExpiry} gives the session its own idle timeout (capped by the
        absolute timeout), which the cookie follows.
        """
        sessionID = self.startSession(user="alice")
        request = makeRequest(self.cookieFor(sessionID))
        self.session(request).setExpiry(60)
        self.commit(request)
        [(_, _, attributes)] = setCookies(request)
        self.assertEqual(attributes[b"max-age"], b"60")
        self.clock.advance(61)
        self.assertIsNone(self.successResultOf(self.store.load(sessionID)))
        request = makeRequest()
        self.session(request).setExpiry(10 * ABSOLUTE)
        self.commit(request)
        record = self.successResultOf(self.store.load(ISession(request).sessionID))
        self.assertEqual(record.idleTimeout, ABSOLUTE)


class ConcurrencyTests(ManagerTestCase):
    """
    Two requests of one session at the same time.
    """

    def pair(self, sessionID: str) -> Tuple[Request, Request, Session, Session]:
        """
        Two requests of one session, both loaded before either commits.
        """
        first = makeRequest(self.cookieFor(sessionID))
        second = makeRequest(self.cookieFor(sessionID))
        return first, second, self.session(first), self.session(second)

    def test_differentKeysBothKept(self) -> None:
        """
        Two requests that load the same session and write different keys
        lose neither write.
        """
        sessionID = self.startSession(base=0)
        first, second, a, b = self.pair(sessionID)
        a["cart"] = ["book"]
        b["theme"] = "dark"
        del b["base"]
        self.commit(first)
        self.commit(second)
        loaded = Session(self.successResultOf(self.store.load(sessionID)))
        self.assertEqual(dict(loaded), {"cart": ["book"], "theme": "dark"})
        self.assertEqual(loaded.version, 3)
        self.assertNotIn("changed", self.logged())

    def test_sameKeyConflicts(self) -> None:
        """
        When both write the same key, the first to commit keeps its value
        and the second fails with L{SessionCommitError} (reason
        C{"conflict"}) rather than overwriting it; the log names the key.
        """
        sessionID = self.startSession(step=1)
        first, second, a, b = self.pair(sessionID)
        a["step"] = 2
        b["step"] = 3
        self.commit(first)
        error = self.failureResultOf(self.manager.commit(second), SessionCommitError)
        self.assertEqual(error.value.reason, "conflict")
        loaded = Session(self.successResultOf(self.store.load(sessionID)))
        self.assertEqual(loaded["step"], 2)
        self.assertIn("another request changed step", self.logged())

    def test_sameNewValueConflicts(self) -> None:
        """
        Two requests that both count 5 to 6 do not both succeed: the second
        fails, so the count matches the successes.
        """
        sessionID = self.startSession(n=5)
        first, second, a, b = self.pair(sessionID)
        a["n"] = a["n"] + 1
        b["n"] = b["n"] + 1
        self.commit(first)
        self.failureResultOf(self.manager.commit(second), SessionCommitError)

    def test_deleteOfChangedKeyConflicts(self) -> None:
        """
        Deleting a key another request changed (or deleted: a one-time
        token used twice) fails the second commit.
        """
        for change in ("replace", "delete"):
            sessionID = self.startSession(token="t1")
            first, second, a, b = self.pair(sessionID)
            if change == "replace":
                a["token"] = "t2"
            else:
                del a["token"]
            del b["token"]
            self.commit(first)
            error = self.failureResultOf(
                self.manager.commit(second), SessionCommitError
            )
            self.assertEqual(error.value.reason, "conflict", change)

    def test_concurrentIncrementsMatchSuccesses(self) -> None:
        """
        Of several requests that each read a counter and write it plus one,
        loaded at once, only those whose increment counts succeed: the
        stored counter rises by the number of successful commits.
        """
        sessionID = self.startSession(n=0)
        requests = [makeRequest(self.cookieFor(sessionID)) for _ in range(10)]
        for request in requests:
            session = self.session(request)
            session["n"] = session["n"] + 1
        outcomes = [commitOutcome(self, self.manager, r) for r in requests]
        loaded = Session(self.successResultOf(self.store.load(sessionID)))
        self.assertEqual(outcomes, ["saved"] + ["conflict"] * 9)
        self.assertEqual(loaded["n"], 1)

    def test_atomicIncrementsAllCount(self) -> None:
        """
        Requests that count with C{increment} all succeed, however they
        interleave, and the counter rises by one for each.
        """
        sessionID = self.startSession(n=0)
        requests = [makeRequest(self.cookieFor(sessionID)) for _ in range(10)]
        shown = [self.session(request).increment("n") for request in requests]
        self.assertEqual(shown, [1] * 10)
        for request in requests:
            self.commit(request)
        loaded = Session(self.successResultOf(self.store.load(sessionID)))
        self.assertEqual(loaded["n"], 10)
        self.assertNotIn("changed", self.logged())

    def test_modifyRefusedOnNewerValue(self) -> None:
        """
        An update function that refuses the newer value (raises) fails the
        commit as a conflict, with the error in the log; nothing is saved.
        """
        sessionID = self.startSession(stock=1)
        first, second, a, b = self.pair(sessionID)

        def takeOne(stock: int) -> int:
            if stock < 1:
                raise ValueError("sold out")
            return stock - 1

        a.modify("stock", takeOne)
        b.modify("stock", takeOne)
        b["order"] = "book"
        self.commit(first)
        error = self.failureResultOf(self.manager.commit(second), SessionCommitError)
        self.assertEqual(error.value.reason, "conflict")
        loaded = Session(self.successResultOf(self.store.load(sessionID)))
        self.assertEqual(dict(loaded), {"stock": 0})
        self.assertIn("sold out", self.logged())

    def test_atomicIncrementRetriesExhausted(self) -> None:
        """
        An atomic update that loses every retry fails with
        L{SessionCommitError} and is not counted.
        """
        sessionID = self.startSession(n=0)
        request = makeRequest(self.cookieFor(sessionID))
        self.session(request).increment("n")
        save = self.store.save

        def busySave(sessionID: str, version: int, data: bytes, idle: Any) -> Any:
            # Another process always gets there first, setting n to 100.
            self.successResultOf(save(sessionID, version, b'{"n":100}'))
            return save(sessionID, version, data, idle)

        self.patch(self.store, "save", busySave)
        manager = self.makeManager(maxRetries=2)
        error = self.failureResultOf(manager.commit(request), SessionCommitError)
        self.assertEqual(error.value.reason, "conflict")
        loaded = Session(self.successResultOf(self.store.load(sessionID)))
        self.assertEqual(loaded["n"], 100)

    def test_saveAfterDelete(self) -> None:
        """
        A request saving a session that another request logged out fails
        with L{SessionCommitError} (reason C{"gone"}), clears the cookie,
        and does not bring the session back.
        """
        sessionID = self.startSession(user="alice")
        first, second, a, b = self.pair(sessionID)
        self.successResultOf(self.manager.expire(first))
        b["cart"] = ["book"]
        error = self.failureResultOf(self.manager.commit(second), SessionCommitError)
        self.assertEqual(error.value.reason, "gone")
        self.assertIsNone(self.successResultOf(self.store.load(sessionID)))
        self.assertEqual(self.store.stats()["sessions"], 0)
        [(_, value, attributes)] = setCookies(second)
        self.assertEqual((value, attributes[b"max-age"]), (b"", b"0"))
        self.assertIn("the session ended while the request ran", self.logged())

    def test_conflictsExhausted(self) -> None:
        """
        When other requests keep saving through every retry, the commit
        gives up with L{SessionCommitError} (reason C{"conflict"}) after
        C{maxRetries} re-reads.
        """
        sessionID = self.startSession(n=0)
        request = makeRequest(self.cookieFor(sessionID))
        self.session(request)["mine"] = 1
        saves = []
        save = self.store.save

        def busySave(sessionID: str, version: int, data: bytes, idle: Any) -> Any:
            saves.append(version)
            # Another request always gets there first.
            self.successResultOf(save(sessionID, version, b'{"n":1}'))
            return save(sessionID, version, data, idle)

        self.patch(self.store, "save", busySave)
        manager = self.makeManager(maxRetries=2)
        error = self.failureResultOf(manager.commit(request), SessionCommitError)
        self.assertEqual(error.value.reason, "conflict")
        self.assertEqual(saves, [1, 2, 3])

    def test_goneDuringMerge(self) -> None:
        """
        A session deleted between a conflict and the re-read is reported as
        gone, not recreated.
        """
        sessionID = self.startSession(n=0)
        request = makeRequest(self.cookieFor(sessionID))
        self.session(request)["mine"] = 1

        def conflictThenLogout(*args: Any) -> Any:
            self.successResultOf(self.store.delete(sessionID))
            return fail(ConflictError(sessionID, 1, 2))

        self.patch(self.store, "save", conflictThenLogout)
        error = self.failureResultOf(self.manager.commit(request), SessionCommitError)
        self.assertEqual(error.value.reason, "gone")
        self.assertEqual(self.store.stats()["sessions"], 0)


class HeldStore:
    """
    A memory store whose C{load} and C{save} answers wait until the test
    lets them through, one at a time in the order it chooses, so that
    requests interleave exactly as the test says.
    """

    def __init__(self, store: MemorySessionStore) -> None:
        self.store = store
        self.idleTimeout = store.idleTimeout
        self.absoluteTimeout = store.absoluteTimeout
        self.maxValueBytes = store.maxValueBytes
        self.waiting: List[Tuple[str, Tuple[Any, ...], Deferred[Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def _hold(self, name: str, *args: Any) -> Deferred[Any]:
        answer: Deferred[Any] = Deferred()
        self.waiting.append((name, args, answer))
        return answer

    def load(self, *args: Any) -> Deferred[Any]:
        return self._hold("load", *args)

    def save(self, *args: Any) -> Deferred[Any]:
        return self._hold("save", *args)

    def calls(self) -> List[str]:
        """
        The waiting calls, oldest first: C{"save 1"} for a save expecting
        version 1, C{"load"} for a load.
        """
        return [
            name if name == "load" else f"{name} {args[1]}"
            for name, args, _ in self.waiting
        ]

    def release(self, index: int = 0) -> None:
        """
        Run the waiting call at C{index} on the memory store and deliver its
        answer.
        """
        name, args, answer = self.waiting.pop(index)
        getattr(self.store, name)(*args).chainDeferred(answer)


class InterleavedCommitTests(ManagerTestCase):
    """
    Requests of one session in several processes (one manager each), their
    store calls answered in an order the test chooses.
    """

    def setUp(self) -> None:
        super().setUp()
        self.sessionID = self.startSession(n=0, other=0)
        self.held = HeldStore(self.store)

    def process(self, **kwargs: Any) -> SessionManager:
        """
        The manager of another process sharing the store.
        """
        manager = SessionManager(self.held, self.clock, **kwargs)  # type: ignore[arg-type]
        manager.log = self.manager.log
        return manager

    def loaded(self, manager: SessionManager) -> Tuple[Request, Session]:
        """
        A request of the session, loaded through C{manager}.
        """
        request = makeRequest(self.cookieFor(self.sessionID))
        d = manager.sessionForRequest(request)
        self.held.release()
        return request, self.successResultOf(d)

    def stored(self) -> Dict[str, Any]:
        """
        What the store holds now.
        """
        return dict(Session(self.successResultOf(self.store.load(self.sessionID))))

    def test_retryLosesAgainThenWins(self) -> None:
        """
        An atomic update re-applied after a conflict that conflicts again
        (a third process saved between its re-read and its save) is
        re-applied once more, and all three updates count.
        """
        managers = [self.process() for _ in range(3)]
        loaded = [self.loaded(manager) for manager in managers]
        for _, session in loaded:
            session.increment("n")
        commits = [m.commit(r) for m, (r, _) in zip(managers, loaded)]
        self.assertEqual(self.held.calls(), ["save 1", "save 1", "save 1"])
        self.held.release()  # the first saves: version 2
        self.successResultOf(commits[0])
        self.held.release()  # the second conflicts and re-reads
        self.held.release()  # the third conflicts and re-reads
        self.assertEqual(self.held.calls(), ["load", "load"])
        self.held.release()
        self.held.release()
        self.assertEqual(self.held.calls(), ["save 2", "save 2"])
        self.held.release()  # the second saves: version 3
        self.successResultOf(commits[1])
        self.held.release()  # the third conflicts again
        self.held.release()
        self.assertEqual(self.held.calls(), ["save 3"])
        self.held.release()
        self.successResultOf(commits[2])
        self.assertEqual(self.stored(), {"n": 3, "other": 0})

    def test_plainWritesAcrossProcesses(self) -> None:
        """
        The same interleaving with plain writes: the first succeeds, the
        others fail at their first re-read, and the counter rose by one.
        """
        managers = [self.process() for _ in range(3)]
        loaded = [self.loaded(manager) for manager in managers]
        for _, session in loaded:
            session["n"] = session["n"] + 1
        loaded[2][1]["other"] = 1
        commits = [m.commit(r) for m, (r, _) in zip(managers, loaded)]
        for _ in range(5):
            self.held.release()
        self.assertEqual(self.held.calls(), [])
        self.successResultOf(commits[0])
        for commit in commits[1:]:
            error = self.failureResultOf(commit, SessionCommitError)
            self.assertEqual(error.value.reason, "conflict")
        self.assertEqual(self.stored(), {"n": 1, "other": 0})

    def test_disjointWriteRetriedPastAtomicOnes(self) -> None:
        """
        A plain write to a key nobody else wrote is re-applied over any
        number of concurrent saves of other keys.
        """
        managers = [self.process() for _ in range(3)]
        loaded = [self.loaded(manager) for manager in managers]
        loaded[0][1]["other"] = 7
        loaded[1][1].increment("n")
        loaded[2][1].increment("n")
        commits = [m.commit(r) for m, (r, _) in zip(managers, loaded)]
        self.held.release(1)  # the first increment saves: version 2
        self.held.release(1)  # the second increment conflicts
        self.held.release(0)  # the plain write conflicts
        self.assertEqual(self.held.calls(), ["load", "load"])
        self.held.release(0)  # the second increment re-reads...
        self.held.release(0)  # ...and the plain write
        self.assertEqual(self.held.calls(), ["save 2", "save 2"])
        self.held.release(1)  # the plain write saves: version 3
        self.held.release(0)  # the second increment conflicts again
        self.held.release(0)
        self.assertEqual(self.held.calls(), ["save 3"])
        self.held.release(0)
        for commit in commits:
            self.successResultOf(commit)
        self.assertEqual(self.stored(), {"n": 2, "other": 7})

    def test_commitsOfOneProcessTakeTurns(self) -> None:
        """
        Within one process, commits of one session take turns: the second
        saves only once the first is done, so an atomic update needs one
        re-read at most and never runs out of retries there.
        """
        manager = self.process(maxRetries=1)
        loaded = [self.loaded(manager) for _ in range(4)]
        for _, session in loaded:
            session.increment("n")
        commits = [manager.commit(request) for request, _ in loaded]
        self.assertEqual(self.held.calls(), ["save 1"])
        self.held.release()
        self.assertEqual(self.held.calls(), ["save 1"])
        for _ in range(3):
            self.held.release()  # conflict
            self.assertEqual(self.held.calls(), ["load"])
            self.held.release()
            self.held.release()
        for commit in commits:
            self.successResultOf(commit)
        self.assertEqual(self.stored(), {"n": 4, "other": 0})


class RotationAndLogoutTests(ManagerTestCase):
    """
    cycleKey, flush and expire.
    """

    def test_rotationKeepsDataKillsOldID(self) -> None:
        """
        After C{cycleKey} the session's data is under a new identifier sent
        in the cookie, and the old identifier no longer works.
        """
        sessionID = self.startSession(cart=["book"])
        request = makeRequest(self.cookieFor(sessionID))
        session = self.session(request)
        session["user"] = "alice"
        session.cycleKey()
        self.commit(request)
        newID = session.sessionID
        self.assertNotEqual(newID, sessionID)
        [(_, value, _)] = setCookies(request)
        self.assertEqual(value.decode(), newID)
        self.assertIsNone(self.successResultOf(self.store.load(sessionID)))
        later = makeRequest(self.cookieFor(newID))
        self.assertEqual(dict(self.session(later)), {"cart": ["book"], "user": "alice"})
        stale = makeRequest(self.cookieFor(sessionID))
        self.assertTrue(self.session(stale).isNew)

    def test_rotationMergesConcurrentSave(self) -> None:
        """
        A save by another request between this request's load and its
        rotation is kept under the new identifier.
        """
        sessionID = self.startSession(a=0)
        first = makeRequest(self.cookieFor(sessionID))
        second = makeRequest(self.cookieFor(sessionID))
        login = self.session(first)
        self.session(second)["theme"] = "dark"
        self.commit(second)
        login["user"] = "alice"
        login.cycleKey()
        self.commit(first)
        loaded = self.successResultOf(self.store.load(login.sessionID))
        self.assertEqual(
            dict(Session(loaded)), {"a": 0, "theme": "dark", "user": "alice"}
        )

    def test_rotationAfterConflictingSave(self) -> None:
        """
        A login that sets a key another request changed between this
        request's load and its rotation fails as a conflict; the rotation
        stands (the response carries the new cookie, the old identifier is
        dead) and the other request's value is kept under the new one.
        """
        sessionID = self.startSession(user=None)
        first = makeRequest(self.cookieFor(sessionID))
        second = makeRequest(self.cookieFor(sessionID))
        login = self.session(first)
        self.session(second)["user"] = "bob"
        self.commit(second)
        login["user"] = "alice"
        login.cycleKey()
        error = self.failureResultOf(self.manager.commit(first), SessionCommitError)
        self.assertEqual(error.value.reason, "conflict")
        [(_, value, _)] = setCookies(first)
        newID = value.decode()
        self.assertNotEqual(newID, sessionID)
        self.assertIsNone(self.successResultOf(self.store.load(sessionID)))
        loaded = self.successResultOf(self.store.load(newID))
        self.assertEqual(dict(Session(loaded)), {"user": "bob"})

    def test_rotatedSessionGone(self) -> None:
        """
        Rotating a session that was deleted meanwhile fails with
        L{SessionCommitError}.
        """
        sessionID = self.startSession(a=0)
        request = makeRequest(self.cookieFor(sessionID))
        self.session(request).cycleKey()
        self.successResultOf(self.store.delete(sessionID))
        self.failureResultOf(self.manager.commit(request), SessionCommitError)

    def test_flush(self) -> None:
        """
        C{flush} deletes the stored session and clears the cookie.
        """
        sessionID = self.startSession(user="alice")
        request = makeRequest(self.cookieFor(sessionID))
        self.session(request).flush()
        self.commit(request)
        self.assertIsNone(self.successResultOf(self.store.load(sessionID)))
        [(name, value, attributes)] = setCookies(request)
        self.assertEqual((name, value), (b"TLSESSION", b""))
        self.assertEqual(attributes[b"max-age"], b"0")
        self.assertIn(b"expires", attributes)

    def test_flushThenWrite(self) -> None:
        """
        Values set after C{flush} go into a new session; the response
        carries only the new cookie.
        """
        sessionID = self.startSession(user="alice")
        request = makeRequest(self.cookieFor(sessionID))
        session = self.session(request)
        session.flush()
        session["flash"] = "You have logged out."
        self.commit(request)
        self.assertIsNone(self.successResultOf(self.store.load(sessionID)))
        [(_, value, _)] = setCookies(request)
        self.assertEqual(value.decode(), session.sessionID)
        loaded = self.successResultOf(self.store.load(session.sessionID))
        self.assertEqual(dict(Session(loaded)), {"flash": "You have logged out."})

    def test_expire(self) -> None:
        """
        C{expire} deletes the session at once and clears the cookie, with or
        without the session loaded.
        """
        for load in (True, False):
            sessionID = self.startSession(user="alice")
            request = makeRequest(self.cookieFor(sessionID))
            if load:
                self.session(request)
            self.successResultOf(self.manager.expire(request))
            self.assertIsNone(self.successResultOf(self.store.load(sessionID)))
            [(_, value, attributes)] = setCookies(request)
            self.assertEqual((value, attributes[b"max-age"]), (b"", b"0"))

    def test_afterHeaders(self) -> None:
        """
        A commit after the response started still saves changes to a stored
        session, but cannot start a new session or rotate (no cookie can be
        sent any more); it says so in the log.
        """
        sessionID = self.startSession(n=1)
        request = makeRequest(self.cookieFor(sessionID))
        session = self.session(request)
        session["n"] = 2
        session.cycleKey()
        request.write(b"started")
        self.commit(request)
        self.assertEqual(session.sessionID, sessionID)
        stored = self.successResultOf(self.store.load(sessionID))
        self.assertEqual(Session(stored)["n"], 2)
        fresh = makeRequest()
        self.session(fresh)["n"] = 1
        fresh.write(b"started")
        self.commit(fresh)
        self.assertEqual(self.store.stats()["sessions"], 1)
        self.assertIn("cycleKey() was called after the response started", self.logged())
        self.assertIn("A new session was not stored", self.logged())


class FailingStore:
    """
    A store whose every call fails with C{error} (or never answers, when
    C{error} is C{None}).
    """

    idleTimeout = IDLE
    absoluteTimeout = ABSOLUTE
    maxValueBytes = 65536

    def __init__(self, error: Optional[Exception]) -> None:
        self.error = error
        self.pending: List[Deferred[Any]] = []

    def _answer(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        if self.error is not None:
            return fail(self.error)
        d: Deferred[Any] = Deferred()
        self.pending.append(d)
        return d

    create = load = save = touch = rotate = delete = _answer


class UnavailableStoreTests(ManagerTestCase):
    """
    A store that cannot be reached fails calls fast and clearly.
    """

    def loadWith(self, store: FailingStore) -> Deferred[Any]:
        """
        Load a session for a request with a cookie, through C{store}.
        """
        manager = SessionManager(store, self.clock, storeTimeout=3)  # type: ignore[arg-type]
        return manager.sessionForRequest(makeRequest(self.cookieFor(newSessionID())))

    def test_unavailable(self) -> None:
        """
        L{StoreUnavailableError} from the store reaches the caller at once.
        """
        d = self.loadWith(FailingStore(StoreUnavailableError("daemon down")))
        self.assertIn("daemon down", str(self.failureResultOf(d).value))

    def test_connectionErrors(self) -> None:
        """
        Connection errors from a store are reported as
        L{StoreUnavailableError}.
        """
        for error in [ConnectionRefusedError(), ConnectionResetError()]:
            d = self.loadWith(FailingStore(error))
            self.failureResultOf(d, StoreUnavailableError)

    def test_silentStoreTimesOut(self) -> None:
        """
        A store that does not answer fails the call with
        L{StoreUnavailableError} after C{storeTimeout} seconds, not never.
        """
        store = FailingStore(None)
        d = self.loadWith(store)
        self.assertNoResult(d)
        self.clock.advance(3)
        error = self.failureResultOf(d, StoreUnavailableError)
        self.assertIn("did not answer within 3", str(error.value))
        # The memory store of setUp sweeps on this clock while it runs.
        self.successResultOf(self.store.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_otherErrorsUnchanged(self) -> None:
        """
        Other store errors (a conflict here) are not disguised as an outage.
        """
        d = self.loadWith(FailingStore(ConflictError("x", 1)))
        self.failureResultOf(d, ConflictError)

    def test_touchFailureIsNotFatal(self) -> None:
        """
        A request that only reads its session is answered normally when
        marking it seen fails; the failure is logged.
        """
        sessionID = self.startSession(user="alice")
        self.clock.advance(IDLE / 2)
        request = makeRequest(self.cookieFor(sessionID))
        self.session(request)
        self.patch(
            self.store, "touch", lambda sessionID: fail(StoreUnavailableError("down"))
        )
        self.commit(request)
        self.assertIn("not marked seen: down", self.logged())
