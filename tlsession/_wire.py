# -*- test-case-name: tests.unit.test_daemon -*-
"""
The session daemon's wire format, shared by the daemon
(L{tlsession.daemon}) and its client (L{tlsession.stores.pb}).

Requests travel in batches through one Perspective Broker call, and every
answer and pushed change is one packed byte string: a status byte and its
fields. Only basic types cross the wire (L{wireSecurity}).
"""

from __future__ import annotations

import math
import struct
from typing import Any, Iterable, Optional

from twisted.python.failure import Failure
from twisted.spread.jelly import SecurityOptions

from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    SessionRecord,
    ValueTooLargeError,
)

#: The user name every client logs in with; the secret is the password.
SECRET_USERNAME = b"tlsession"


def wireSecurity() -> SecurityOptions:
    """
    Jelly options allowing only basic types, references to PB objects (the
    avatar and the mind) and PB's copied failures: no other classes and no
    cached objects. A separate object from jelly's global one, so classes
    registered elsewhere in the process never become acceptable here.
    """
    security = SecurityOptions()
    security.allowBasicTypes()
    security.allowTypes("remote", "local", "twisted.spread.pb.CopyableFailure")
    return security


# The wire format. Each answer is one byte string, a status byte and its
# fields, and pushes are one byte string too: jelly and banana handle a
# string several times faster than the tuples it would otherwise take
# (about 11 against 50 microseconds per answer, measured on CPython).

#: Status bytes that start an answer.
OK = b"o"
CONFLICT = b"c"
GONE = b"g"
TOO_LARGE = b"t"

# version, created, lastSeen, idleTimeout, identifier length; then the
# identifier and the data.
_RECORD = struct.Struct("!QdddB")
# The new version and lastSeen, after a save.
_SAVED = struct.Struct("!Qd")
# lastSeen, after a touch.
_SEEN = struct.Struct("!d")
# The current version (-1: unknown), after a conflict.
_CURRENT = struct.Struct("!q")
# The size and the limit, after a refusal for size.
_TOO_LARGE = struct.Struct("!QQ")
# One pushed change: the version (-1: gone) and the identifier's length;
# then the identifier.
_CHANGE = struct.Struct("!qB")


#: Operation codes that start a request.
CREATE = b"C"
LOAD = b"L"
SAVE = b"S"
TOUCH = b"T"
ROTATE = b"R"
DELETE = b"D"

#: The status of an answer to a request the daemon could not read.
BAD = b"b"

#: Requests in one batch at most.
MAX_BATCH = 1000

# The idle timeout (0: the store's default); then the data.
_CREATE = struct.Struct("!d")
# The expected version, the idle timeout (0: the session's own) and the
# identifier's length; then the identifier and the data.
_SAVE = struct.Struct("!QdB")


def packCreate(data: bytes, idleTimeout: Optional[float]) -> bytes:
    """
    A create request.
    """
    return CREATE + _CREATE.pack(idleTimeout or 0.0) + data


def packSave(
    sessionID: str, expectedVersion: int, data: bytes, idleTimeout: Optional[float]
) -> bytes:
    """
    A save request.
    """
    encoded = sessionID.encode("utf-8")
    header = _SAVE.pack(expectedVersion, idleTimeout or 0.0, len(encoded))
    return SAVE + header + encoded + data


def packSession(operation: bytes, sessionID: str) -> bytes:
    """
    A request about one session and nothing else: L{LOAD}, L{TOUCH},
    L{ROTATE} or L{DELETE}.
    """
    return operation + sessionID.encode("utf-8")


def unpackRequest(
    blob: object,
) -> tuple[bytes, str, int, bytes, Optional[float]]:
    """
    Read a request.

    @return: the operation, the session identifier (empty for a create),
        the expected version (0 unless a save), the data (empty unless a
        create or a save) and the idle timeout (C{None}: unchanged).
    @raise ValueError: C{blob} is not a request.
    """
    if not isinstance(blob, bytes) or not blob:
        raise ValueError("a request must be bytes")
    operation, body = blob[:1], blob[1:]
    if operation in (LOAD, TOUCH, ROTATE, DELETE):
        return operation, body.decode("utf-8"), 0, b"", None
    if operation == CREATE:
        if len(body) < _CREATE.size:
            raise ValueError("truncated create")
        (idle,) = _CREATE.unpack_from(body)
        return operation, "", 0, body[_CREATE.size :], _idle(idle)
    if operation == SAVE:
        if len(body) < _SAVE.size:
            raise ValueError("truncated save")
        version, idle, length = _SAVE.unpack_from(body)
        end = _SAVE.size + length
        if len(body) < end:
            raise ValueError("truncated save")
        sessionID = body[_SAVE.size : end].decode("utf-8")
        return operation, sessionID, version, body[end:], _idle(idle)
    raise ValueError(f"unknown operation {operation!r}")


def _idle(value: float) -> Optional[float]:
    """
    A requested idle timeout: 0 for none, else a finite number above 0.
    """
    if value == 0:
        return None
    if not math.isfinite(value) or value < 0:
        raise ValueError("the idle timeout must be a number > 0")
    return value


def packRecord(record: SessionRecord) -> bytes:
    """
    A L{SessionRecord} as bytes for the wire.
    """
    sessionID = record.sessionID.encode("utf-8")
    header = _RECORD.pack(
        record.version,
        record.created,
        record.lastSeen,
        record.idleTimeout,
        len(sessionID),
    )
    return header + sessionID + record.data


def unpackRecord(blob: object) -> SessionRecord:
    """
    Read a record made by L{packRecord}.

    @raise ValueError: C{blob} is not a packed record.
    """
    if not isinstance(blob, bytes) or len(blob) < _RECORD.size:
        raise ValueError(f"not a session record: {blob!r:.80}")
    version, created, lastSeen, idleTimeout, length = _RECORD.unpack_from(blob)
    end = _RECORD.size + length
    if len(blob) < end or not all(
        math.isfinite(t) for t in (created, lastSeen, idleTimeout)
    ):
        raise ValueError(f"not a session record: {blob!r:.80}")
    return SessionRecord(
        blob[_RECORD.size : end].decode("utf-8"),
        version,
        blob[end:],
        created,
        lastSeen,
        idleTimeout,
    )


def packSaved(version: int, lastSeen: float) -> bytes:
    """
    The payload of a save's answer.
    """
    return _SAVED.pack(version, lastSeen)


def unpackSaved(payload: bytes) -> tuple[int, float]:
    """
    Read L{packSaved}'s payload.

    @raise ValueError: it is not one.
    """
    if len(payload) != _SAVED.size:
        raise ValueError("not the answer to a save")
    version, lastSeen = _SAVED.unpack(payload)
    return version, lastSeen


def packSeen(lastSeen: float) -> bytes:
    """
    The payload of a touch's answer.
    """
    return _SEEN.pack(lastSeen)


def unpackSeen(payload: bytes) -> float:
    """
    Read L{packSeen}'s payload.

    @raise ValueError: it is not one.
    """
    if len(payload) != _SEEN.size:
        raise ValueError("not the answer to a touch")
    (lastSeen,) = _SEEN.unpack(payload)
    return float(lastSeen)


def packRefusal(failure: Failure) -> Any:
    """
    Turn a store's refusal into an answer, so the client can raise the
    same exception type; any other failure is passed on.
    """
    error = failure.value
    if isinstance(error, ConflictError):
        current = -1 if error.current is None else error.current
        return CONFLICT + _CURRENT.pack(current)
    if isinstance(error, SessionGoneError):
        return GONE
    if isinstance(error, ValueTooLargeError):
        return TOO_LARGE + _TOO_LARGE.pack(error.size, error.limit)
    return failure


def unpackAnswer(answer: object, sessionID: str, expectedVersion: int = 0) -> bytes:
    """
    The payload of a successful answer, or the error a refusal stands for.

    @raise ConflictError: for a conflict (C{expectedVersion} is reported).
    @raise SessionGoneError: for a missing session.
    @raise ValueTooLargeError: for oversized data.
    @raise ValueError: the answer is none of these.
    """
    if not isinstance(answer, bytes) or not answer:
        raise ValueError(f"unexpected answer: {answer!r:.80}")
    status, payload = answer[:1], answer[1:]
    if status == OK:
        return payload
    if status == CONFLICT and len(payload) == _CURRENT.size:
        (current,) = _CURRENT.unpack(payload)
        raise ConflictError(
            sessionID, expectedVersion, None if current < 0 else current
        )
    if status == GONE and not payload:
        raise SessionGoneError(sessionID)
    if status == TOO_LARGE and len(payload) == _TOO_LARGE.size:
        raise ValueTooLargeError(*_TOO_LARGE.unpack(payload))
    if status == BAD:
        raise ValueError(
            "the daemon refused the request: " + payload.decode("utf-8", "replace")
        )
    raise ValueError(f"unexpected answer: {answer!r:.80}")


def packChanges(changes: Iterable[tuple[str, Optional[int]]]) -> bytes:
    """
    Invalidations as bytes for the wire: C{(sessionID, version)}, with
    C{None} for a session that is gone.
    """
    parts = []
    for sessionID, version in changes:
        encoded = sessionID.encode("utf-8")
        parts.append(_CHANGE.pack(-1 if version is None else version, len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


def unpackChanges(blob: object) -> list[tuple[str, Optional[int]]]:
    """
    Read L{packChanges}'s bytes.

    @raise ValueError: C{blob} is not packed changes.
    """
    if not isinstance(blob, bytes):
        raise ValueError("invalidations must be bytes")
    changes: list[tuple[str, Optional[int]]] = []
    offset = 0
    while offset < len(blob):
        if len(blob) - offset < _CHANGE.size:
            raise ValueError("truncated invalidations")
        version, length = _CHANGE.unpack_from(blob, offset)
        offset += _CHANGE.size
        if len(blob) - offset < length:
            raise ValueError("truncated invalidations")
        sessionID = blob[offset : offset + length].decode("utf-8")
        offset += length
        changes.append((sessionID, None if version < 0 else version))
    return changes
