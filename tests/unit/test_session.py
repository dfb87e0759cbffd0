"""
Tests for L{tlsession.session}: the session object a request holds.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, List

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from tlsession import session as sessionModule
from tlsession.interfaces import ISession, SessionRecord
from tlsession.session import CSRF_KEY, Session, checkJSONValue
from tlsession.stores import newSessionID


def record(data: Any, version: int = 1, sessionID: str = "") -> SessionRecord:
    """
    A stored session holding C{data} (a dict, encoded as JSON, or bytes).
    """
    raw = data if isinstance(data, bytes) else json.dumps(data).encode("utf-8")
    return SessionRecord(
        sessionID=sessionID or newSessionID(),
        version=version,
        data=raw,
        created=100.0,
        lastSeen=100.0,
        idleTimeout=60.0,
    )


class MappingTests(SynchronousTestCase):
    """
    A session is a mapping whose changes are noticed.
    """

    def test_interface(self) -> None:
        """
        A session provides L{ISession}.
        """
        self.assertTrue(verifyObject(ISession, Session()))

    def test_newSession(self) -> None:
        """
        A new session is empty, unstored, unmodified and not yet accessed.
        """
        session = Session()
        self.assertEqual((session.isNew, session.modified), (True, False))
        self.assertFalse(session.accessed)
        self.assertEqual(
            (session.sessionID, len(session), session.version), (None, 0, 0)
        )

    def test_loadedSession(self) -> None:
        """
        A session read from a record has its identifier, version and values.
        """
        stored = record({"user": "alice", "n": 3}, version=7)
        session = Session(stored)
        self.assertEqual(session.sessionID, stored.sessionID)
        self.assertEqual(session.version, 7)
        self.assertEqual(dict(session), {"user": "alice", "n": 3})
        self.assertFalse(session.isNew)
        self.assertFalse(session.modified)

    def test_everyMutatorSetsModified(self) -> None:
        """
        Each way of changing the mapping marks the session modified and
        remembers the key it changed.
        """
        changes = [
            (lambda s: s.__setitem__("a", 2), {"a"}),
            (lambda s: s.__delitem__("a"), {"a"}),
            (lambda s: s.pop("a"), {"a"}),
            (lambda s: s.setdefault("new", 1), {"new"}),
            (lambda s: s.update({"b": 1, "c": 2}), {"b", "c"}),
            (lambda s: s.clear(), {"a", "b"}),
            (lambda s: s.popitem(), {"a"}),
        ]
        for change, touched in changes:
            session = Session(record({"a": 1, "b": 2}))
            change(session)
            self.assertTrue(session.modified, change)
            self.assertEqual(session.touchedKeys, frozenset(touched))

    def test_readsAndNoOpsDoNotModify(self) -> None:
        """
        Reading, and calls that change nothing (C{pop} of a missing key with
        a default, C{setdefault} of a present key, C{clear} of an empty
        session), leave the session unmodified, though accessed.
        """
        session = Session(record({"a": 1}))
        self.assertEqual(session["a"], 1)
        self.assertEqual(session.get("missing", 5), 5)
        self.assertIn("a", session)
        self.assertEqual(list(session.items()), [("a", 1)])
        self.assertIsNone(session.pop("missing", None))
        self.assertEqual(session.setdefault("a", 9), 1)
        Session().clear()
        self.assertFalse(session.modified)
        self.assertTrue(session.accessed)
        self.assertRaises(KeyError, session.__delitem__, "missing")
        self.assertFalse(session.modified)

    def test_nestedChangesNeedModified(self) -> None:
        """
        A change inside a value is not seen; setting C{modified} makes the
        whole session this request's change.
        """
        session = Session(record({"cart": []}))
        session["cart"].append("book")
        self.assertFalse(session.modified)
        session.modified = True
        self.assertTrue(session.modified)
        self.assertEqual(json.loads(session.encode()), {"cart": ["book"]})

    def test_encodingIsCompactAndSorted(self) -> None:
        """
        The stored form is compact JSON with sorted keys, UTF-8.
        """
        session = Session()
        session["z"] = 1
        session["a"] = {"y": [1, 2.5, None, True], "b": "caf\u00e9"}
        self.assertEqual(
            session.encode(),
            '{"a":{"b":"caf\u00e9","y":[1,2.5,null,true]},"z":1}'.encode(),
        )

    def test_damagedDataStartsEmpty(self) -> None:
        """
        Stored data that is not a JSON object gives an empty session rather
        than an error.
        """
        for raw in [b"\xff\xfe", b"[1, 2]", b"{not json"]:
            self.assertEqual(dict(Session(record(raw))), {})


class ValueCheckTests(SynchronousTestCase):
    """
    Only values that survive JSON are accepted, at assignment.
    """

    def test_refusedAtAssignment(self) -> None:
        """
        A value JSON cannot hold faithfully raises L{TypeError} when it is
        assigned, naming the key and the offending part, and nothing is
        stored.
        """
        session = Session()
        cases = [
            (object(), "session['k'] is a object"),
            ({"when": b"bytes"}, "session['k']['when'] is a bytes"),
            ([1, {2: "x"}], "session['k'][1] has the key 2"),
            (float("nan"), "session['k'] is nan"),
            ({1, 2}, "session['k'] is a set"),
        ]
        for value, message in cases:
            error = self.assertRaises(TypeError, session.__setitem__, "k", value)
            self.assertIn(message, str(error))
        self.assertEqual(len(session), 0)
        self.assertFalse(session.modified)

    def test_keys(self) -> None:
        """
        Keys must be text, and the session's reserved prefix is refused.
        """
        session = Session()
        self.assertRaises(TypeError, session.__setitem__, 1, "x")
        self.assertRaises(KeyError, session.__setitem__, CSRF_KEY, "x")

    def test_depthLimit(self) -> None:
        """
        Values nested absurdly deep are refused rather than overflowing the
        stack.
        """
        value: Any = "leaf"
        for _ in range(40):
            value = [value]
        self.assertRaises(TypeError, checkJSONValue, value)
        checkJSONValue([[["fine"]]])


class CSRFTests(SynchronousTestCase):
    """
    The per-session CSRF token.
    """

    def test_tokenMadeOnceAndStored(self) -> None:
        """
        The token is made on first use (modifying the session), stays the
        same, is stored with the session but is not one of its keys.
        """
        session = Session()
        token = session.csrfToken()
        self.assertEqual(len(token), 43)
        self.assertTrue(session.modified)
        self.assertEqual(session.csrfToken(), token)
        self.assertEqual(list(session), [])
        reloaded = Session(record(session.encode()))
        self.assertEqual(reloaded.csrfToken(), token)
        self.assertFalse(reloaded.modified)

    def test_check(self) -> None:
        """
        Only the session's token passes; wrong, empty, non-text and
        non-ASCII tokens fail without errors.
        """
        session = Session()
        token = session.csrfToken()
        self.assertTrue(session.checkCSRFToken(token))
        for wrong in [token[:-1] + "x", "", None, token.encode(), "caf\u00e9", 42]:
            self.assertFalse(session.checkCSRFToken(wrong), repr(wrong))
        self.assertFalse(Session().checkCSRFToken(token))

    def test_constantTimeComparison(self) -> None:
        """
        Tokens are compared with L{hmac.compare_digest}.
        """
        calls: List[tuple[bytes, bytes]] = []
        original = hmac.compare_digest

        def compare(a: bytes, b: bytes) -> bool:
            calls.append((a, b))
            return original(a, b)

        self.patch(sessionModule.hmac, "compare_digest", compare)
        session = Session()
        token = session.csrfToken()
        self.assertTrue(session.checkCSRFToken(token))
        self.assertEqual(calls, [(token.encode(), token.encode())])

    def test_cycleKeyRenewsToken(self) -> None:
        """
        C{cycleKey} asks for a new identifier, keeps the data and replaces
        the CSRF token.
        """
        session = Session(record({"user": "alice"}))
        old = session.csrfToken()
        session.cycleKey()
        self.assertTrue(session.rotationRequested)
        self.assertNotEqual(session.csrfToken(), old)
        self.assertFalse(session.checkCSRFToken(old))
        self.assertEqual(session["user"], "alice")


class LifecycleTests(SynchronousTestCase):
    """
    Flush, expiry and what the manager learns from the session.
    """

    def test_flush(self) -> None:
        """
        C{flush} empties the session, makes it new and hands the old
        identifier to the manager once.
        """
        stored = record({"user": "alice"})
        session = Session(stored)
        session.csrfToken()
        session.flush()
        self.assertEqual((dict(session), session.sessionID), ({}, None))
        self.assertTrue(session.isNew)
        self.assertFalse(session.modified)
        self.assertEqual(session.takeFlushedIDs(), [stored.sessionID])
        self.assertEqual(session.takeFlushedIDs(), [])
        self.assertNotIn(CSRF_KEY.encode(), session.encode())

    def test_setExpiry(self) -> None:
        """
        C{setExpiry} records a positive idle timeout and marks the session
        for saving; other values are refused.
        """
        session = Session(record({}))
        session.setExpiry(300)
        self.assertEqual(session.idleTimeout, 300.0)
        self.assertTrue(session.modified)
        for bad in [0, -1, float("inf")]:
            self.assertRaises(ValueError, session.setExpiry, bad)
        self.assertRaises(TypeError, session.setExpiry, "10")

    def test_stored(self) -> None:
        """
        Once stored, a session is unmodified, with the record's identifier
        and version and no keys left to merge.
        """
        session = Session()
        session["a"] = 1
        stored = record(session.encode(), version=1)
        session.stored(stored)
        self.assertEqual((session.sessionID, session.version), (stored.sessionID, 1))
        self.assertFalse(session.modified)
        self.assertEqual(session.touchedKeys, frozenset())


class RebaseTests(SynchronousTestCase):
    """
    Re-applying a request's changes over a concurrent save.
    """

    def test_disjointKeysBothKept(self) -> None:
        """
        Keys this request set or deleted take its values; keys another
        request changed keep theirs; nothing is reported as overwritten.
        """
        base = record({"a": 1, "b": 2, "gone": 0})
        session = Session(base)
        session["a"] = 10
        del session["gone"]
        newer = record({"a": 1, "b": 20, "gone": 0, "c": 3}, 2, base.sessionID)
        self.assertEqual(session.rebase(newer), [])
        self.assertEqual(dict(session), {"a": 10, "b": 20, "c": 3})
        self.assertEqual(session.version, 2)

    def test_sameKeyReported(self) -> None:
        """
        A key both requests changed takes this request's value and is
        reported; one the other request set to the same value is not.
        """
        base = record({"x": 1, "y": 1})
        session = Session(base)
        session["x"] = 2
        session["y"] = 5
        newer = record({"x": 3, "y": 5}, 2, base.sessionID)
        self.assertEqual(session.rebase(newer), ["x"])
        self.assertEqual(dict(session), {"x": 2, "y": 5})

    def test_tokensOfBothRequestsKept(self) -> None:
        """
        Two requests that each made a CSRF token for one session both keep
        theirs valid.
        """
        base = record({})
        first, second = Session(base), Session(base)
        mine, theirs = first.csrfToken(), second.csrfToken()
        newer = record(second.encode(), 2, base.sessionID)
        self.assertEqual(first.rebase(newer), [])
        self.assertTrue(first.checkCSRFToken(mine))
        self.assertTrue(first.checkCSRFToken(theirs))

    def test_rotationTokenWins(self) -> None:
        """
        After C{cycleKey}, only this request's new token is valid, whatever
        a concurrent request stored.
        """
        base = record({})
        first, second = Session(base), Session(base)
        first.csrfToken()
        first.cycleKey()
        theirs = second.csrfToken()
        newer = record(second.encode(), 2, base.sessionID)
        first.rebase(newer)
        self.assertFalse(first.checkCSRFToken(theirs))
        self.assertTrue(first.checkCSRFToken(first.csrfToken()))
