"""
tlsession: sessions shared by every process of a Twisted site.

Applications wrap their resources in a L{SessionResource} (or build their
site with L{sessionSite}) over a L{SessionManager}, and read and write
C{ISession(request)} in ordinary render methods. Sessions live in an
L{ISessionStore}: L{MemorySessionStore} for one process, or a shared store
for many (see C{tlsession.stores}).
"""

from tlsession.interfaces import (
    ConflictError,
    ISession,
    ISessionManager,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.manager import SessionCommitError, SessionManager
from tlsession.session import Session
from tlsession.stores.memory import MemorySessionStore
from tlsession.web import NoSessionError, SessionResource, sessionSite

__all__ = [
    "ConflictError",
    "ISession",
    "ISessionManager",
    "ISessionStore",
    "MemorySessionStore",
    "NoSessionError",
    "Session",
    "SessionCommitError",
    "SessionGoneError",
    "SessionManager",
    "SessionRecord",
    "SessionResource",
    "StoreUnavailableError",
    "ValueTooLargeError",
    "sessionSite",
]
