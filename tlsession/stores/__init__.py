# -*- test-case-name: tests.unit.test_memorystore -*-
"""
The session stores (memory, the PB daemon's client, Redis, memcached, SQL,
files) and the rules they share: identifiers are 256 random bits from
C{secrets}, and anything not shaped like one is unknown without a lookup;
the default limits. (Their lifecycle and argument checks:
L{tlsession.stores._checks}.)
"""

from __future__ import annotations

import re
import secrets

__all__ = [
    "DEFAULT_ABSOLUTE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_VALUE_BYTES",
    "SESSION_ID_LENGTH",
    "isWellFormedSessionID",
    "newSessionID",
]

#: Seconds of inactivity after which a session expires, unless set otherwise.
DEFAULT_IDLE_TIMEOUT = 1800.0
#: Seconds after creation when a session ends however active it is.
DEFAULT_ABSOLUTE_TIMEOUT = 86400.0
#: The largest session value a store accepts, in bytes.
DEFAULT_MAX_VALUE_BYTES = 65536

#: The length of an identifier: 32 random bytes in URL-safe base64.
SESSION_ID_LENGTH = 43

_SESSION_ID = re.compile("[A-Za-z0-9_-]{" + str(SESSION_ID_LENGTH) + "}")


def newSessionID() -> str:
    """
    A fresh session identifier: 256 bits from the operating system's
    random source, as 43 URL-safe characters.
    """
    return secrets.token_urlsafe(32)


def isWellFormedSessionID(sessionID: object) -> bool:
    """
    Whether C{sessionID} is shaped like an identifier L{newSessionID} makes.

    Stores and the manager check this before any lookup, so junk sent by
    clients (too long, wrong alphabet, not text) never reaches a backend.
    """
    return isinstance(sessionID, str) and _SESSION_ID.fullmatch(sessionID) is not None
