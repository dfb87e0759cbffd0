# -*- test-case-name: tests.unit.test_session -*-
"""
The session a request holds: a mapping of JSON values that remembers what it
held when it was read and which updates this request made, so that the
manager saves only what changed and can merge it with a concurrent request's
save without losing either request's write.
"""

from __future__ import annotations

import copy
import hmac
import json
import math
import secrets
from typing import (
    Any,
    Callable,
    Dict,
    FrozenSet,
    Iterator,
    List,
    MutableMapping,
    Optional,
    Set,
    Tuple,
    Union,
)

from twisted.logger import Logger
from zope.interface import implementer

from tlsession.interfaces import ISession, SessionRecord

__all__ = [
    "CSRF_KEY",
    "RESERVED_PREFIX",
    "ConcurrentChangeError",
    "Session",
    "checkJSONValue",
]

log = Logger()

#: Keys starting with this are the session's own; applications cannot use them.
RESERVED_PREFIX = "_tlsession."

#: Where the CSRF tokens are kept in the stored document.
CSRF_KEY = RESERVED_PREFIX + "csrf"

# Two requests of one fresh session (two tabs opening forms) may each make a
# CSRF token; the merge keeps both so that neither form is refused. Rotation
# goes back to one.
_MAX_CSRF_TOKENS = 4

# Deeper values are refused: they are never sensible session data, and the
# check must not hit the interpreter's recursion limit.
_MAX_DEPTH = 32

_MISSING = object()

# One recorded atomic update: the function and the default it starts from.
_Update = Tuple[Callable[[Any], Any], Any]


class ConcurrentChangeError(Exception):
    """
    Another request changed keys this request wrote since this request read
    them (or an atomic update refused the newer value): this request's
    changes cannot be merged with that request's.

    @ivar keys: the keys in question, sorted.
    """

    def __init__(self, keys: List[str], detail: str = "") -> None:
        super().__init__(
            f"another request changed {', '.join(keys)} since this request "
            "read the session" + (f" ({detail})" if detail else "")
        )
        self.keys = keys


def checkJSONValue(value: object, where: str = "value", depth: int = 0) -> None:
    """
    Check that C{value} survives a JSON round trip unchanged in meaning:
    C{None}, booleans, integers, finite floats, text, lists and tuples
    (stored as lists) of those, and dictionaries with text keys.

    @param where: how the message names the value, e.g. C{"session['cart']"}.
    @raise TypeError: with a message naming the offending part.
    """
    if depth > _MAX_DEPTH:
        raise TypeError(f"{where} is nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise TypeError(f"{where} is {value!r}, which JSON cannot represent")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            checkJSONValue(item, f"{where}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"{where} has the key {key!r}: JSON object keys must be str"
                )
            checkJSONValue(item, f"{where}[{key!r}]", depth + 1)
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}, which is not JSON-serialisable: "
        "sessions hold None, bool, int, float, str, list and dict (str keys) only"
    )


def _encode(document: Dict[str, Any]) -> bytes:
    return json.dumps(
        document,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    ).encode("utf-8")


def _valueJSON(value: object) -> Optional[str]:
    """
    A value as stored, to compare: C{1}, C{1.0} and C{True} differ here;
    C{None} for a missing key.
    """
    if value is _MISSING:
        return None
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def _decode(data: bytes, sessionID: Optional[str]) -> Dict[str, Any]:
    if not data:
        return {}
    try:
        document = json.loads(data.decode("utf-8"))
    except ValueError:
        document = None
    if not isinstance(document, dict):
        # Not ours (or damaged): the session starts empty rather than the
        # request failing; the next save replaces it.
        log.warn(
            "Session {sessionID} holds data that is not a JSON object; "
            "starting it empty",
            sessionID=sessionID,
        )
        return {}
    return document


def _split(document: Dict[str, Any]) -> tuple[Dict[str, Any], List[str]]:
    """
    Separate the application's data from the CSRF tokens.
    """
    tokens = document.pop(CSRF_KEY, [])
    if not (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)):
        tokens = []
    return document, tokens


@implementer(ISession)
class Session(MutableMapping[str, Any]):
    """
    A request's session: a mapping of JSON-serialisable values.

    Every change made through the mapping (C{session[k] = v}, C{del},
    C{pop}, C{setdefault}, C{update}, C{clear}) sets L{modified}; a change
    inside a value (C{session["cart"].append(x)}) cannot be seen: assign the
    value again, or set C{session.modified = True}.

    When another request saved the session after this one read it, this
    request's changes are merged key by key (L{rebase}): a key this request
    changed that the other request changed too is a conflict, unless this
    request changed it with L{modify} or L{increment}, whose functions then
    run again on the newer value.

    @ivar isNew: whether the session was started for this request (it is
        stored only once something is put in it).
    @ivar accessed: whether the application read or changed it; the manager
        adds C{Vary: Cookie} to such responses.
    @ivar version: the stored record's version this session was read at.
    @ivar record: the stored record it was read from, or C{None} when new.
    @ivar idleTimeout: the idle timeout L{setExpiry} asked for, or C{None}.
    """

    def __init__(self, record: Optional[SessionRecord] = None) -> None:
        """
        @param record: the stored session, or C{None} to start a new one.
        """
        self.accessed = False
        self.idleTimeout: Optional[float] = None
        self._flushedIDs: List[str] = []
        self._reset(record)

    def _reset(self, record: Optional[SessionRecord]) -> None:
        self.record = record
        self.isNew = record is None
        self.version = 0 if record is None else record.version
        self._sessionID = None if record is None else record.sessionID
        document = _decode(b"" if record is None else record.data, self._sessionID)
        # What was read, kept apart from what the request changes, to tell
        # on a merge which keys another request changed, and which this one.
        self._original: Dict[str, Any] = copy.deepcopy(document)
        self._data, self._csrf = _split(document)
        self._forgetChanges()
        self._rotate = False

    def _forgetChanges(self) -> None:
        """
        What is held now is what is stored: no change of this request is
        left to merge.
        """
        self._touched: Set[str] = set()
        # Keys set or deleted by plain assignment: never re-applied.
        self._assigned: Set[str] = set()
        # The atomic updates of each other key, and (as stored) what they
        # made of it, to notice a later change inside the value.
        self._updates: Dict[str, List[_Update]] = {}
        self._updated: Dict[str, Optional[str]] = {}
        self._renewedTokens = False
        self._modified = False

    # What the application sees

    @property
    def sessionID(self) -> Optional[str]:
        """
        The identifier, or C{None} while the session is not stored.
        """
        self.accessed = True
        return self._sessionID

    @property
    def modified(self) -> bool:
        """
        Whether the session must be saved. Set it to C{True} after changing
        a value in place; every value that differs from what was read is
        then this request's change.
        """
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        self._modified = bool(value)

    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._checkKey(key)
        checkJSONValue(value, f"session[{key!r}]")
        self.accessed = True
        self._data[key] = value
        self._assign(key)

    def __delitem__(self, key: str) -> None:
        self.accessed = True
        del self._data[key]
        self._assign(key)

    def get(self, key: str, default: Any = None) -> Any:
        """
        The value under C{key}, or C{default}.
        """
        self.accessed = True
        return self._data.get(key, default)

    def modify(
        self, key: str, function: Callable[[Any], Any], default: Any = None
    ) -> Any:
        """
        Replace the value under C{key} with C{function(value)} atomically:
        at once (so that this request sees the result), and again on the
        newer value each time another request turns out to have saved the
        session first, until this request's save goes through. Use it for
        counters, lists that several requests append to, and any value
        computed from the one it replaces.

        C{function} is given a copy of the current value, or of C{default}
        when C{key} is missing, and returns the new JSON-serialisable
        value; it may run more than once, so it must not do anything but
        compute. If it raises when run again, the commit fails as a conflict
        (HTTP 409). A plain C{session[key] = value} or C{del session[key]}
        of the same key in this request, before or after, makes the key's
        change a plain one again (a conflict if another request changed it).

        @return: the new value.
        @raise TypeError: if C{function} is not callable or returns a value
            that is not JSON-serialisable (the session is left unchanged).
        @raise KeyError: for a reserved key.
        """
        self._checkKey(key)
        if not callable(function):
            raise TypeError(f"{function!r} is not callable")
        self.accessed = True
        current = self._data.get(key, _MISSING)
        value = _apply(key, function, default, current)
        if key not in self._assigned:
            before = self._updated.get(
                key, _valueJSON(self._original.get(key, _MISSING))
            )
            if _valueJSON(current) != before:
                # Changed in place since read (or since the last update):
                # re-applying the updates would lose that change.
                self._assign(key)
        if key not in self._assigned:
            # (A copy of the default: the caller may reuse its object.)
            self._updates.setdefault(key, []).append((function, copy.deepcopy(default)))
            self._updated[key] = _valueJSON(value)
        self._data[key] = value
        self._changed(key)
        return value

    def increment(self, key: str, delta: Union[int, float] = 1) -> Union[int, float]:
        """
        Add C{delta} to the number under C{key} (0 when missing) atomically,
        as L{modify} does: concurrent requests that each increment it all
        count.

        @return: the new value.
        @raise TypeError: if C{delta} or the value is not a number (booleans
            are not numbers here).
        @raise ValueError: if C{delta} is not finite.
        """
        if isinstance(delta, bool) or not isinstance(delta, (int, float)):
            raise TypeError(f"delta must be a number, not {delta!r}")
        if not math.isfinite(delta):
            raise ValueError(f"delta must be finite, not {delta!r}")

        def add(value: Any) -> Union[int, float]:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(
                    f"session[{key!r}] holds a {type(value).__name__}, not a number"
                )
            result: Union[int, float] = value + delta
            return result

        result: Union[int, float] = self.modify(key, add, 0)
        return result

    def __iter__(self) -> Iterator[str]:
        self.accessed = True
        return iter(list(self._data))

    def __len__(self) -> int:
        self.accessed = True
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        self.accessed = True
        return key in self._data

    def __repr__(self) -> str:
        return f"<Session {self._sessionID!r} version={self.version}>"

    def cycleKey(self) -> None:
        """
        Move the session to a new identifier when it is committed (after
        login), keeping its data; the CSRF token is renewed too.
        """
        self.accessed = True
        self._rotate = True
        if self._csrf:
            self._csrf = [secrets.token_urlsafe(32)]
            self._renewedTokens = True
            self._changed(CSRF_KEY)

    def flush(self) -> None:
        """
        Empty the session and drop it (logout): the stored session is deleted
        when the request is committed, and values set afterwards go into a
        new session with a new identifier.
        """
        self.accessed = True
        if self._sessionID is not None:
            self._flushedIDs.append(self._sessionID)
        self.idleTimeout = None
        self._reset(None)

    def setExpiry(self, seconds: float) -> None:
        """
        Give this session its own idle timeout (capped by the store's
        absolute timeout), saved with it.

        @raise ValueError: unless C{seconds} is a positive number.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
            raise TypeError(f"seconds must be a number, not {seconds!r}")
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ValueError(f"seconds must be positive and finite, not {seconds!r}")
        self.accessed = True
        self.idleTimeout = float(seconds)
        self._modified = True

    def csrfToken(self) -> str:
        """
        The session's CSRF token: 256 random bits, made on first use and
        renewed by L{cycleKey}.
        """
        self.accessed = True
        if not self._csrf:
            self._csrf = [secrets.token_urlsafe(32)]
            self._changed(CSRF_KEY)
        return self._csrf[-1]

    def checkCSRFToken(self, token: object) -> bool:
        """
        Whether C{token} is this session's CSRF token, compared in constant
        time. Anything but non-empty text is refused.
        """
        self.accessed = True
        if not isinstance(token, str) or not token:
            return False
        given = token.encode("utf-8")
        matched = False
        for expected in self._csrf:
            # No early exit: the time taken does not say which token matched.
            matched |= hmac.compare_digest(given, expected.encode("utf-8"))
        return matched

    # What the manager uses

    @property
    def touchedKeys(self) -> FrozenSet[str]:
        """
        The keys this request set or deleted since the session was read or
        last saved (L{CSRF_KEY} for the CSRF token).
        """
        return frozenset(self._touched)

    @property
    def storedID(self) -> Optional[str]:
        """
        The identifier, like L{sessionID}, without counting as the
        application's access.
        """
        return self._sessionID

    @property
    def rotationRequested(self) -> bool:
        """
        Whether L{cycleKey} was called and not yet applied.
        """
        return self._rotate

    def takeFlushedIDs(self) -> List[str]:
        """
        The identifiers L{flush} dropped, which the manager must delete;
        asking hands them over.
        """
        flushed, self._flushedIDs = self._flushedIDs, []
        return flushed

    def encode(self) -> bytes:
        """
        The stored form: compact JSON with sorted keys, UTF-8.
        """
        document = dict(self._data)
        if self._csrf:
            document[CSRF_KEY] = list(self._csrf)
        return _encode(document)

    def stored(self, record: SessionRecord) -> None:
        """
        The session was written as C{record} (created, saved or rotated):
        what it holds now is what is stored.
        """
        self.record = record
        self.version = record.version
        self._sessionID = record.sessionID
        self._original = json.loads(self.encode().decode("utf-8"))
        self._forgetChanges()
        self._rotate = False

    def moved(self, record: SessionRecord) -> None:
        """
        The session was rotated to C{record}'s identifier. This request's
        unsaved changes stay, still based on the version it read: if
        another request saved in between, the save of those changes meets
        that version and merges with it (L{rebase}).
        """
        self.record = record
        self._sessionID = record.sessionID
        self._rotate = False

    def rebase(self, record: SessionRecord) -> None:
        """
        Merge this request's changes into C{record}, a newer version saved
        by another request since this session was read, so that saving it
        loses neither request's writes.

        A key whose value this request changed (set, deleted, or changed
        in place) takes this request's value if the newer version still
        holds what this request read there; keys changed by L{modify} and
        L{increment} get their updates applied again to the newer value;
        every other key takes the newer value. Values are compared as
        stored, so a key changed and changed back counts as unchanged.

        @raise ConcurrentChangeError: a key this request changed plainly was
            changed by the other request too (even to the same value: two
            requests that both counted 5 to 6 must not both succeed), or an
            update raised on the newer value. The session is left as it
            was.
        """
        fresh = _decode(record.data, record.sessionID)
        freshData, freshTokens = _split(copy.deepcopy(fresh))
        mineData, mineTokens = _split(json.loads(self.encode().decode("utf-8")))
        readData, readTokens = _split(copy.deepcopy(self._original))
        atomic = {
            key
            for key in self._updates
            if _valueJSON(mineData.get(key, _MISSING)) == self._updated[key]
        }
        written = {
            key
            for key in set(mineData) | set(readData)
            if key not in atomic
            and _valueJSON(mineData.get(key, _MISSING))
            != _valueJSON(readData.get(key, _MISSING))
        }
        conflicts = sorted(
            key
            for key in written
            if _valueJSON(freshData.get(key, _MISSING))
            != _valueJSON(readData.get(key, _MISSING))
        )
        if conflicts:
            raise ConcurrentChangeError(conflicts)
        merged = dict(freshData)
        for key in written:
            if key in mineData:
                merged[key] = mineData[key]
            else:
                merged.pop(key, None)
        updated = {}
        for key in sorted(atomic):
            value = freshData.get(key, _MISSING)
            try:
                for function, default in self._updates[key]:
                    value = _apply(key, function, default, value)
            except Exception as e:
                raise ConcurrentChangeError(
                    [key], f"its update refused the newer value: {e!r}"
                ) from e
            merged[key] = value
            updated[key] = _valueJSON(value)
        if mineTokens == readTokens:
            tokens = freshTokens
        elif self._renewedTokens:
            # A rotation renewed the token: older ones must stop working.
            tokens = mineTokens
        else:
            tokens = _mergeTokens(mineTokens, freshTokens)
        self.record = record
        self.version = record.version
        self._original = fresh
        self._data, self._csrf = merged, tokens
        self._updated.update(updated)

    def _checkKey(self, key: object) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        if key.startswith(RESERVED_PREFIX):
            raise KeyError(f"keys starting with {RESERVED_PREFIX!r} are reserved")

    def _assign(self, key: str) -> None:
        """
        C{key} was set or deleted plainly: its value no longer follows from
        the updates recorded for it.
        """
        self._assigned.add(key)
        self._updates.pop(key, None)
        self._updated.pop(key, None)
        self._changed(key)

    def _changed(self, key: str) -> None:
        self._touched.add(key)
        self._modified = True


def _apply(key: str, function: Callable[[Any], Any], default: Any, current: Any) -> Any:
    """
    What C{function} makes of a copy of C{current} (of C{default} when it is
    missing), checked to be JSON-serialisable.
    """
    value = function(copy.deepcopy(default if current is _MISSING else current))
    checkJSONValue(value, f"session[{key!r}]")
    return value


def _mergeTokens(mine: object, theirs: object) -> List[str]:
    """
    The CSRF tokens of two requests that each made one: both stay valid.
    """
    tokens: List[str] = []
    for source in (theirs, mine):
        if isinstance(source, list):
            tokens.extend(t for t in source if isinstance(t, str) and t not in tokens)
    return tokens[-_MAX_CSRF_TOKENS:]
