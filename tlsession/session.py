# -*- test-case-name: tests.unit.test_session -*-
"""
The session a request holds: a mapping of JSON values that remembers whether
it changed and which keys this request set or deleted, so that the manager
saves only what changed and can merge it with a concurrent request's save.
"""

from __future__ import annotations

import copy
import hmac
import json
import math
import secrets
from typing import Any, Dict, FrozenSet, Iterator, List, MutableMapping, Optional, Set

from twisted.logger import Logger
from zope.interface import implementer

from tlsession.interfaces import ISession, SessionRecord

__all__ = ["CSRF_KEY", "RESERVED_PREFIX", "Session", "checkJSONValue"]

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
        # on a merge which keys another request changed.
        self._original: Dict[str, Any] = copy.deepcopy(document)
        self._data, self._csrf = _split(document)
        self._touched: Set[str] = set()
        self._touchedAll = False
        self._modified = False
        self._rotate = False

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
        a value in place; the whole session is then this request's change.
        """
        return self._modified

    @modified.setter
    def modified(self, value: bool) -> None:
        if value:
            self._touchedAll = True
        self._modified = bool(value)

    def __getitem__(self, key: str) -> Any:
        self.accessed = True
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._checkKey(key)
        checkJSONValue(value, f"session[{key!r}]")
        self.accessed = True
        self._data[key] = value
        self._changed(key)

    def __delitem__(self, key: str) -> None:
        self.accessed = True
        del self._data[key]
        self._changed(key)

    def get(self, key: str, default: Any = None) -> Any:
        """
        The value under C{key}, or C{default}.
        """
        self.accessed = True
        return self._data.get(key, default)

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
        self._touched = set()
        self._touchedAll = False
        self._modified = False
        self._rotate = False

    def moved(self, record: SessionRecord) -> List[str]:
        """
        The session was rotated to C{record}'s identifier; this request's
        unsaved changes stay, re-applied on top of C{record} if another
        request saved in between.

        @return: as L{rebase}.
        """
        overwritten = self.rebase(record) if record.version != self.version else []
        self.record = record
        self._sessionID = record.sessionID
        self._rotate = False
        return overwritten

    def rebase(self, record: SessionRecord) -> List[str]:
        """
        Re-apply this request's changes on top of C{record}, a newer version
        saved by another request: keys this request set or deleted take this
        request's value; every other key takes the newer one.

        @return: the keys both requests changed, where this request's value
            won over the other's.
        """
        fresh = _decode(record.data, record.sessionID)
        if self._touchedAll:
            keys = set(self._data) | set(self._original) | set(self._touched)
            keys.add(CSRF_KEY)
        else:
            keys = set(self._touched)
        overwritten = []
        # Through JSON, so that values compare as they will be stored.
        mine = json.loads(self.encode().decode("utf-8"))
        merged = dict(fresh)
        for key in sorted(keys):
            theirs = fresh.get(key, _MISSING)
            if key == CSRF_KEY and not self._rotate:
                merged[key] = _mergeTokens(mine.get(key, []), theirs)
                continue
            if theirs != self._original.get(key, _MISSING) and theirs != mine.get(
                key, _MISSING
            ):
                overwritten.append(key)
            if key in mine:
                merged[key] = mine[key]
            else:
                merged.pop(key, None)
        self.record = record
        self.version = record.version
        self._original = fresh
        self._data, self._csrf = _split(merged)
        return overwritten

    def _checkKey(self, key: object) -> None:
        if not isinstance(key, str):
            raise TypeError(f"session keys must be str, not {type(key).__name__}")
        if key.startswith(RESERVED_PREFIX):
            raise KeyError(f"keys starting with {RESERVED_PREFIX!r} are reserved")

    def _changed(self, key: str) -> None:
        self._touched.add(key)
        self._modified = True


def _mergeTokens(mine: object, theirs: object) -> List[str]:
    """
    The CSRF tokens of two requests that each made one: both stay valid.
    """
    tokens: List[str] = []
    for source in (theirs, mine):
        if isinstance(source, list):
            tokens.extend(t for t in source if isinstance(t, str) and t not in tokens)
    return tokens[-_MAX_CSRF_TOKENS:]
