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
from tlsession.session import CSRF_KEY, ConcurrentChangeError, Session, checkJSONValue
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
    Re-applying a request's changes over a concurrent save: keys only one
    request wrote merge; a key this request wrote that changed since it was
    read is a conflict.
    """

    def assertConflict(
        self, session: Session, newer: SessionRecord, keys: List[str]
    ) -> None:
        """
        C{session.rebase(newer)} fails naming C{keys}, and leaves the session
        as it was.
        """
        before = (dict(session), session.version, session.encode())
        error = self.assertRaises(ConcurrentChangeError, session.rebase, newer)
        self.assertEqual(error.keys, keys)
        self.assertEqual((dict(session), session.version, session.encode()), before)

    def test_disjointKeysBothKept(self) -> None:
        """
        Keys this request set or deleted take its values; keys another
        request changed keep theirs.
        """
        base = record({"a": 1, "b": 2, "gone": 0})
        session = Session(base)
        session["a"] = 10
        del session["gone"]
        newer = record({"a": 1, "b": 20, "gone": 0, "c": 3}, 2, base.sessionID)
        session.rebase(newer)
        self.assertEqual(dict(session), {"a": 10, "b": 20, "c": 3})
        self.assertEqual(session.version, 2)

    def test_sameKeyConflicts(self) -> None:
        """
        A key both requests changed is a conflict; this request's value
        does not replace the other's.
        """
        base = record({"x": 1, "y": 1})
        session = Session(base)
        session["x"] = 2
        self.assertConflict(session, record({"x": 3, "y": 1}, 2, base.sessionID), ["x"])

    def test_sameNewValueConflicts(self) -> None:
        """
        Two requests that both counted 5 to 6 conflict: counting both as
        done would lose one.
        """
        base = record({"n": 5})
        session = Session(base)
        session["n"] = session["n"] + 1
        self.assertConflict(session, record({"n": 6}, 2, base.sessionID), ["n"])

    def test_deleteOfChangedKeyConflicts(self) -> None:
        """
        Deleting a key the other request changed or deleted too is a
        conflict (a one-time value used twice); so is setting a key the
        other request deleted or added.
        """
        base = record({"token": "t1"})
        for newer, change in [
            ({"token": "t2"}, lambda s: s.pop("token")),
            ({}, lambda s: s.pop("token")),
            ({}, lambda s: s.__setitem__("token", "t3")),
            ({"token": "t1", "new": 1}, lambda s: s.__setitem__("new", 2)),
        ]:
            session = Session(base)
            change(session)
            key = "new" if "new" in newer else "token"
            self.assertConflict(session, record(newer, 2, base.sessionID), [key])

    def test_changedBackIsNoConflict(self) -> None:
        """
        A key that other requests changed and then changed back holds what
        this request read, so this request's write to it stands.
        """
        base = record({"n": 5})
        session = Session(base)
        session["n"] = 6
        session.rebase(record({"n": 5}, 3, base.sessionID))
        self.assertEqual(dict(session), {"n": 6})

    def test_valuesCompareAsStored(self) -> None:
        """
        A change from C{1} to C{True} or C{1.0} is a change, although they
        are equal in Python.
        """
        for newer in (True, 1.0):
            base = record({"n": 1})
            session = Session(base)
            session["n"] = 2
            self.assertConflict(session, record({"n": newer}, 2, base.sessionID), ["n"])

    def test_unchangedWriteTakesNewer(self) -> None:
        """
        A key this request set back to the value it read was not changed
        by it: it takes the newer value, with no conflict.
        """
        base = record({"x": 1, "y": 1})
        session = Session(base)
        session["x"] = session["x"]
        session["y"] = 2
        session.rebase(record({"x": 3, "y": 1}, 2, base.sessionID))
        self.assertEqual(dict(session), {"x": 3, "y": 2})

    def test_inPlaceChangeMergesByValue(self) -> None:
        """
        After a change inside a value and C{modified = True}, the keys whose
        values changed are this request's; another request's change to any
        other key is kept, and to the same key is a conflict.
        """
        base = record({"cart": [], "theme": "light"})
        session = Session(base)
        session["cart"].append("book")
        session.modified = True
        session.rebase(record({"cart": [], "theme": "dark"}, 2, base.sessionID))
        self.assertEqual(dict(session), {"cart": ["book"], "theme": "dark"})
        self.assertConflict(
            session,
            record({"cart": ["pen"], "theme": "dark"}, 3, base.sessionID),
            ["cart"],
        )

    def test_severalConflictsNamed(self) -> None:
        """
        Every conflicting key is named, in order.
        """
        base = record({"a": 1, "b": 1, "c": 1})
        session = Session(base)
        session.update({"a": 2, "b": 2, "c": 2})
        newer = record({"a": 3, "b": 1, "c": 3}, 2, base.sessionID)
        self.assertConflict(session, newer, ["a", "c"])

    def test_tokensOfBothRequestsKept(self) -> None:
        """
        Two requests that each made a CSRF token for one session both keep
        theirs valid.
        """
        base = record({})
        first, second = Session(base), Session(base)
        mine, theirs = first.csrfToken(), second.csrfToken()
        newer = record(second.encode(), 2, base.sessionID)
        first.rebase(newer)
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


class ModifyTests(SynchronousTestCase):
    """
    Atomic updates: C{modify} and C{increment} are applied at once and
    re-applied to the newer value when another request saved meanwhile.
    """

    def test_appliedAtOnce(self) -> None:
        """
        C{modify} stores what the function makes of the current value,
        returns it, and marks the key changed.
        """
        session = Session(record({"n": 4}))
        self.assertEqual(session.modify("n", lambda n: n * 10), 40)
        self.assertEqual(session["n"], 40)
        self.assertTrue(session.modified)
        self.assertEqual(session.touchedKeys, frozenset({"n"}))

    def test_default(self) -> None:
        """
        A missing key is given C{default}, a copy each time, so that a
        function changing its argument in place changes no one else's.
        """
        empty: List[str] = []

        def add(cart: List[str]) -> List[str]:
            cart.append("book")
            return cart

        session = Session(record({}))
        self.assertEqual(session.modify("cart", add, empty), ["book"])
        self.assertEqual(empty, [])
        self.assertIsNone(session.modify("none", lambda value: value))
        self.assertIsNone(session["none"])

    def test_functionGetsACopy(self) -> None:
        """
        A function that changes the current value in place and then fails
        leaves the session as it was.
        """
        session = Session(record({"tags": ["a"]}))

        def addBadTag(tags: List[Any]) -> List[Any]:
            tags.append({1, 2})
            return tags

        self.assertRaises(TypeError, session.modify, "tags", addBadTag)
        self.assertEqual((session["tags"], session.modified), (["a"], False))

    def test_reappliedOnRebase(self) -> None:
        """
        On every rebase the recorded updates run again, in order, on the
        newer value.
        """
        base = record({"n": 1})
        session = Session(base)
        session.increment("n")
        session.modify("n", lambda n: n * 2)
        self.assertEqual(session["n"], 4)
        session.rebase(record({"n": 5}, 2, base.sessionID))
        self.assertEqual(session["n"], 12)
        session.rebase(record({"n": 10}, 3, base.sessionID))
        self.assertEqual(session["n"], 22)

    def test_missingInNewerGetsDefault(self) -> None:
        """
        When the newer session lacks the key, the update starts from its
        default again.
        """
        base = record({"cart": ["pen"]})
        session = Session(base)
        session.modify("cart", lambda cart: cart + ["book"], [])
        session.rebase(record({}, 2, base.sessionID))
        self.assertEqual(dict(session), {"cart": ["book"]})

    def test_mergesWithPlainWrites(self) -> None:
        """
        Atomic updates and plain writes to other keys all survive a rebase
        over another request's changes to other keys.
        """
        base = record({"n": 0, "a": 0, "b": 0})
        session = Session(base)
        session.increment("n")
        session["a"] = 1
        session.rebase(record({"n": 3, "a": 0, "b": 7}, 2, base.sessionID))
        self.assertEqual(dict(session), {"n": 4, "a": 1, "b": 7})

    def test_plainWriteEndsAtomicity(self) -> None:
        """
        A key set plainly, before or after an update, holds a value based
        on what this request read: a concurrent change to it is a conflict.
        """
        for steps in (
            [lambda s: s.increment("n"), lambda s: s.__setitem__("n", 0)],
            [lambda s: s.__setitem__("n", 0), lambda s: s.increment("n")],
            [lambda s: s.increment("n"), lambda s: s.pop("n")],
        ):
            base = record({"n": 5})
            session = Session(base)
            for step in steps:
                step(session)
            self.assertRaises(
                ConcurrentChangeError,
                session.rebase,
                record({"n": 6}, 2, base.sessionID),
            )

    def test_inPlaceChangeAfterUpdate(self) -> None:
        """
        A value changed in place after an update no longer is what the
        update made: it is not silently re-made without that change.
        """
        base = record({"cart": []})
        session = Session(base)
        session.modify("cart", lambda cart: cart + ["book"])
        session["cart"].append("pen")
        error = self.assertRaises(
            ConcurrentChangeError,
            session.rebase,
            record({"cart": ["hat"]}, 2, base.sessionID),
        )
        self.assertEqual(error.keys, ["cart"])

    def test_refusedOnRebase(self) -> None:
        """
        An update that raises on the newer value is a conflict naming its
        key, chained to the error, and the session is left as it was.
        """

        def takeOne(stock: int) -> int:
            if stock < 1:
                raise ValueError("sold out")
            return stock - 1

        base = record({"stock": 1})
        session = Session(base)
        session["order"] = "book"
        self.assertEqual(session.modify("stock", takeOne), 0)
        error = self.assertRaises(
            ConcurrentChangeError,
            session.rebase,
            record({"stock": 0}, 2, base.sessionID),
        )
        self.assertEqual(error.keys, ["stock"])
        self.assertIsInstance(error.__cause__, ValueError)
        self.assertEqual(
            (dict(session), session.version), ({"stock": 0, "order": "book"}, 1)
        )

    def test_nonJSONResultRefused(self) -> None:
        """
        An update whose result is not JSON-serialisable raises
        C{TypeError} and changes nothing; on a rebase it is a conflict.
        """
        session = Session(record({"tags": ["a"]}))
        self.assertRaises(TypeError, session.modify, "tags", set)
        self.assertEqual((session["tags"], session.modified), (["a"], False))
        base = record({"n": 1})
        session = Session(base)
        session.modify("n", lambda n: n if n == 1 else {n})
        self.assertRaises(
            ConcurrentChangeError, session.rebase, record({"n": 2}, 2, base.sessionID)
        )

    def test_reservedAndBadKeys(self) -> None:
        """
        C{modify} refuses what C{session[key] = value} refuses.
        """
        session = Session()
        self.assertRaises(KeyError, session.modify, CSRF_KEY, lambda v: v)
        self.assertRaises(TypeError, session.modify, 1, lambda v: v)
        self.assertRaises(TypeError, session.modify, "k", "not callable")

    def test_increment(self) -> None:
        """
        C{increment} adds C{delta} (1 by default) to a number, starting
        from 0, and returns the sum.
        """
        session = Session()
        self.assertEqual(session.increment("visits"), 1)
        self.assertEqual(session.increment("visits"), 2)
        self.assertEqual(session.increment("score", 2.5), 2.5)
        self.assertEqual(session.increment("score", -1), 1.5)
        self.assertEqual(dict(session), {"visits": 2, "score": 1.5})

    def test_incrementRefusals(self) -> None:
        """
        C{increment} refuses a delta that is not a finite number, and a
        stored value that is not a number (C{True} is not one here).
        """
        session = Session(record({"name": "alice", "flag": True}))
        for delta in ("1", True, None, float("nan"), float("inf")):
            self.assertRaises((TypeError, ValueError), session.increment, "n", delta)
        self.assertRaises(TypeError, session.increment, "name")
        self.assertRaises(TypeError, session.increment, "flag")
        self.assertFalse(session.modified)

    def test_storedForgetsUpdates(self) -> None:
        """
        Once saved, the updates are done: a later rebase does not run them
        again.
        """
        base = record({"n": 1})
        session = Session(base)
        session.increment("n")
        session.stored(record(session.encode(), 2, base.sessionID))
        session.rebase(record({"n": 10}, 3, base.sessionID))
        self.assertEqual(session["n"], 10)

    def test_flushForgetsUpdates(self) -> None:
        """
        After C{flush}, updates made before it are gone with the old
        session.
        """
        session = Session(record({"n": 1}))
        session.increment("n")
        session.flush()
        self.assertEqual(session.increment("n"), 1)
        self.assertEqual(dict(session), {"n": 1})
