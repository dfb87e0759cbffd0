# -*- test-case-name: tests.unit.test_sqlstore -*-
"""
Sessions in an SQL database through L{twisted.enterprise.adbapi}: SQLite as
the embedded default, PostgreSQL (psycopg2) with the same statements.

Also home of L{SessionSweepService}, which reclaims expired sessions of any
store with a C{sweep} method (the SQL and file stores) on a clock.
"""

from __future__ import annotations

import math
import os
import platform
import re
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Protocol,
    Tuple,
    Union,
)

import attrs
from twisted.application.service import Service
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tlsession.interfaces import (
    ConflictError,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.stores import (
    DEFAULT_ABSOLUTE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_VALUE_BYTES,
    isWellFormedSessionID,
    newSessionID,
)

__all__ = [
    "DEFAULT_ABSOLUTE_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_VALUE_BYTES",
    "SQLSessionStore",
    "SessionSweepService",
    "TABLE",
    "checkIdleTimeout",
    "checkLimits",
]

#: The table sessions live in (one row per session).
TABLE = "tlsession_sessions"


def checkIdleTimeout(value: Optional[float]) -> Optional[float]:
    """
    C{value} as a float, after checking that it is a usable idle timeout
    (positive and finite), or C{None} unchanged.

    @raise ValueError: for zero, negative, infinite or NaN timeouts.
    """
    if value is None:
        return None
    seconds = float(value)
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"an idle timeout must be a positive number, not {value!r}")
    return seconds


def checkLimits(
    idleTimeout: float, absoluteTimeout: float, maxValueBytes: int
) -> Tuple[float, float, int]:
    """
    A store's limits, checked: timeouts positive and finite, the size limit
    a non-negative integer.

    @raise ValueError: for anything else.
    """
    for name, value in [
        ("idleTimeout", idleTimeout),
        ("absoluteTimeout", absoluteTimeout),
    ]:
        if not (float(value) > 0 and math.isfinite(value)):
            raise ValueError(
                f"{name} must be a positive number of seconds, not {value!r}"
            )
    if (
        isinstance(maxValueBytes, bool)
        or not isinstance(maxValueBytes, int)
        or maxValueBytes < 0
    ):
        raise ValueError(
            f"maxValueBytes must be a non-negative integer, not {maxValueBytes!r}"
        )
    return float(idleTimeout), float(absoluteTimeout), maxValueBytes


# The statements, written once with :name parameters; _Statement turns them
# into the driver's parameter style.

_CREATE_TABLE = f"""CREATE TABLE IF NOT EXISTS {TABLE} (
    session_id TEXT PRIMARY KEY,
    version {{integer}} NOT NULL,
    data {{bytes}} NOT NULL,
    created {{float}} NOT NULL,
    last_seen {{float}} NOT NULL,
    idle_timeout {{float}} NOT NULL,
    expires_at {{float}} NOT NULL
)"""
_CREATE_INDEX = f"CREATE INDEX IF NOT EXISTS {TABLE}_expires_at ON {TABLE} (expires_at)"
_INSERT = (
    f"INSERT INTO {TABLE} (session_id, version, data, created, last_seen,"
    " idle_timeout, expires_at)"
    " VALUES (:id, :version, :data, :created, :now, :idle, :expires)"
)
_SELECT = (
    "SELECT version, data, created, last_seen, idle_timeout, expires_at"
    f" FROM {TABLE} WHERE session_id = :id"
)
# A row is live while neither deadline has passed; the same test is made in
# Python on rows read back (_isLive), so reads and writes agree.
_LIVE = "expires_at >= :now AND created >= :oldest"
_DEADLINE = (
    "CASE WHEN :now + {idle} < created + :absolute"
    " THEN :now + {idle} ELSE created + :absolute END"
)
_SAVE = (
    f"UPDATE {TABLE} SET data = :data, version = version + 1, last_seen = :now,"
    " idle_timeout = COALESCE(:idle, idle_timeout),"
    f" expires_at = {_DEADLINE.format(idle='COALESCE(:idle, idle_timeout)')}"
    f" WHERE session_id = :id AND version = :version AND {_LIVE}"
)
_TOUCH = (
    f"UPDATE {TABLE} SET last_seen = :now,"
    f" expires_at = {_DEADLINE.format(idle='idle_timeout')}"
    f" WHERE session_id = :id AND {_LIVE}"
)
_DELETE = f"DELETE FROM {TABLE} WHERE session_id = :id"
_DELETE_VERSION = f"DELETE FROM {TABLE} WHERE session_id = :id AND version = :version"
_SWEEP = (
    f"DELETE FROM {TABLE} WHERE session_id IN"
    f" (SELECT session_id FROM {TABLE} WHERE expires_at < :now LIMIT :limit)"
)

_PARAMETER = re.compile(r":([a-z]+)")


@attrs.frozen
class _Statement:
    """
    One statement in the driver's parameter style.

    @ivar text: the SQL text for the driver.
    @ivar order: for positional styles, the parameter names in the order
        their placeholders appear; C{None} when the driver takes a mapping.
    """

    text: str
    order: Optional[Tuple[str, ...]]

    @classmethod
    def forStyle(cls, statement: str, paramstyle: str) -> _Statement:
        """
        Translate C{statement}, written with C{:name} parameters, into the
        DB-API C{paramstyle}: the one place where C{sqlite3} (qmark) and
        psycopg2 (pyformat) differ.
        """
        if paramstyle == "named":
            return cls(statement, None)
        if paramstyle == "pyformat":
            return cls(_PARAMETER.sub(r"%(\1)s", statement), None)
        if paramstyle == "qmark":
            names = tuple(_PARAMETER.findall(statement))
            return cls(_PARAMETER.sub("?", statement), names)
        raise ValueError(
            f"DB-API parameter style {paramstyle!r} is not supported"
            " (qmark, named and pyformat are)"
        )

    def execute(self, cursor: Any, **values: object) -> None:
        """
        Run the statement on C{cursor} with the named C{values}.
        """
        if self.order is None:
            cursor.execute(self.text, values)
        else:
            cursor.execute(self.text, tuple(values[name] for name in self.order))


@attrs.frozen
class _Dialect:
    """
    What differs between the databases, besides the parameter style.

    @ivar schemaLock: a statement that serialises schema creation across
        processes, where concurrent C{CREATE TABLE IF NOT EXISTS} can fail.
    """

    name: str
    integerType: str
    floatType: str
    bytesType: str
    schemaLock: Optional[str]


_DIALECTS = {
    "sqlite": _Dialect("sqlite", "INTEGER", "REAL", "BLOB", None),
    # PostgreSQL can fail concurrent CREATE TABLE IF NOT EXISTS with a unique
    # violation in its catalogue; a transaction-scoped advisory lock (key:
    # "tlsess" in ASCII) makes processes starting together take turns.
    "postgresql": _Dialect(
        "postgresql",
        "BIGINT",
        "DOUBLE PRECISION",
        "BYTEA",
        "SELECT pg_advisory_xact_lock(128009141318515)",
    ),
}


class _Statements:
    """
    Every statement the store runs, translated once for its driver.
    """

    def __init__(self, dialect: _Dialect, paramstyle: str) -> None:
        def make(text: str) -> _Statement:
            return _Statement.forStyle(text, paramstyle)

        types = {
            "integer": dialect.integerType,
            "float": dialect.floatType,
            "bytes": dialect.bytesType,
        }
        self.schema = [make(_CREATE_TABLE.format(**types)), make(_CREATE_INDEX)]
        if dialect.schemaLock is not None:
            self.schema.insert(0, make(dialect.schemaLock))
        self.insert = make(_INSERT)
        self.select = make(_SELECT)
        self.save = make(_SAVE)
        self.touch = make(_TOUCH)
        self.delete = make(_DELETE)
        self.deleteVersion = make(_DELETE_VERSION)
        self.sweep = make(_SWEEP)


class _CorruptRowError(Exception):
    """
    A row that cannot be a session (wrong types or impossible values).
    """


def _number(value: object, column: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _CorruptRowError(f"{column} is {type(value).__name__}, not a number")
    number = float(value)
    if not math.isfinite(number):
        raise _CorruptRowError(f"{column} is {number}")
    return number


def _recordFromRow(sessionID: str, row: Tuple[Any, ...]) -> Tuple[SessionRecord, float]:
    """
    The record in a row of L{_SELECT}, and its C{expires_at}.

    @raise _CorruptRowError: when the row holds something no store wrote.
    """
    version, data, created, lastSeen, idleTimeout, expiresAt = row
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _CorruptRowError(f"version is {version!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise _CorruptRowError(f"data is {type(data).__name__}, not bytes")
    idle = _number(idleTimeout, "idle_timeout")
    if idle <= 0:
        raise _CorruptRowError(f"idle_timeout is {idle}")
    record = SessionRecord(
        sessionID=sessionID,
        version=version,
        data=bytes(data),
        created=_number(created, "created"),
        lastSeen=_number(lastSeen, "last_seen"),
        idleTimeout=idle,
    )
    return record, _number(expiresAt, "expires_at")


def _raiseOutcome(outcome: Any) -> Any:
    """
    Interactions return store errors rather than raise them, so that adbapi
    commits instead of rolling back (with a reconnect probe) on an ordinary
    conflict; raise them here, in the reactor thread.
    """
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


@implementer(ISessionStore)
class SQLSessionStore:
    """
    Sessions in one table of an SQL database, reached through an adbapi
    L{ConnectionPool<adbapi.ConnectionPool>}.

    Build one with L{sqlite} or L{postgresql}. The table (L{TABLE}) and its
    index are created on first use if they are missing. Saves are a
    compare-and-swap on the row's version (C{UPDATE ... WHERE version = ?});
    rotation is one transaction; expiry is checked against C{clock} on every
    read and write, and L{sweep} (run by a L{SessionSweepService}) deletes
    expired rows in bounded batches. Any number of processes may share the
    database.

    @ivar pool: the adbapi connection pool (L{close} closes it).
    @ivar log: where corrupt rows are reported.
    """

    log = Logger()

    def __init__(
        self,
        pool: adbapi.ConnectionPool,
        clock: IReactorTime,
        dialect: str = "sqlite",
        *,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        absoluteTimeout: float = DEFAULT_ABSOLUTE_TIMEOUT,
        maxValueBytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        """
        @param pool: a pool for a DB-API module whose parameter style is
            qmark, named or pyformat.
        @param clock: the time every timestamp and expiry check uses.
        @param dialect: C{"sqlite"} or C{"postgresql"}.
        @param idleTimeout: default seconds of inactivity before expiry.
        @param absoluteTimeout: seconds after creation when sessions end.
        @param maxValueBytes: the largest session value accepted.
        """
        if dialect not in _DIALECTS:
            raise ValueError(
                f"unknown SQL dialect {dialect!r} (known: {', '.join(_DIALECTS)})"
            )
        self.pool = pool
        self.clock = clock
        self.dialect = dialect
        self.idleTimeout, self.absoluteTimeout, self.maxValueBytes = checkLimits(
            idleTimeout, absoluteTimeout, maxValueBytes
        )
        self._statements = _Statements(
            _DIALECTS[dialect], getattr(pool.dbapi, "paramstyle", "qmark")
        )
        self._unavailableErrors: Tuple[type, ...] = (adbapi.ConnectionLost,) + tuple(
            error
            for error in (
                getattr(pool.dbapi, "OperationalError", None),
                getattr(pool.dbapi, "InterfaceError", None),
            )
            if isinstance(error, type)
        )
        # Drivers raise the bare base class for what they cannot classify,
        # such as psycopg2 for a connection the server closed mid-query.
        self._unclassifiedError = getattr(pool.dbapi, "DatabaseError", None)
        self._schemaReady = False
        self._schemaWaiters: List[Deferred[None]] = []

    @classmethod
    def sqlite(
        cls,
        path: str,
        clock: IReactorTime,
        *,
        reactor: Any = None,
        busyTimeout: float = 5.0,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        absoluteTimeout: float = DEFAULT_ABSOLUTE_TIMEOUT,
        maxValueBytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> SQLSessionStore:
        """
        A store in the SQLite database file C{path} (created if missing).

        SQLite lets one writer in at a time, so the pool holds a single
        connection (one thread); the database runs in WAL mode so that other
        processes can read while one writes, and waits at most
        C{busyTimeout} seconds for another process's write lock before the
        call fails with L{StoreUnavailableError}.

        @param reactor: the reactor that starts and stops the pool's thread
            and delivers its results (default: the global one). Queries run
            once it is running, so a store made before C{twistd} forks is
            safe.
        """
        busyMilliseconds = int(busyTimeout * 1000)

        def prepare(connection: Any) -> None:
            cursor = connection.cursor()
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.fetchall()
                cursor.execute(f"PRAGMA busy_timeout = {busyMilliseconds}")
                # WAL with synchronous=NORMAL is safe against corruption; a
                # power cut may forget the last sessions written, which is
                # the same as their users logging in again.
                cursor.execute("PRAGMA synchronous = NORMAL")
            finally:
                cursor.close()

        _createPrivately(path)
        pool = adbapi.ConnectionPool(
            "sqlite3",
            path,
            timeout=busyTimeout,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,
            cp_openfun=prepare,
            **_reactorArgument(reactor),
        )
        return cls(
            pool,
            clock,
            "sqlite",
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )

    @classmethod
    def postgresql(
        cls,
        connection: Union[str, Mapping[str, Any]],
        clock: IReactorTime,
        *,
        reactor: Any = None,
        minConnections: int = 1,
        maxConnections: int = 5,
        connectTimeout: float = 5.0,
        driver: Optional[str] = None,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        absoluteTimeout: float = DEFAULT_ABSOLUTE_TIMEOUT,
        maxValueBytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> SQLSessionStore:
        """
        A store in a PostgreSQL database.

        @param connection: a libpq connection string or URI
            (C{"host=/run/postgresql dbname=site"}), or the keyword arguments
            of C{psycopg2.connect} as a mapping.
        @param reactor: the reactor that starts and stops the pool's
            threads and delivers their results (default: the global one).
            Queries run once it is running.
        @param connectTimeout: seconds to wait for a connection (libpq's
            C{connect_timeout}, unless C{connection} sets it).
        @param driver: the DB-API module: C{psycopg2} on CPython and
            C{psycopg2cffi} on PyPy, where psycopg2 does not run.
        @raise ImportError: when the driver is not installed.
        """
        if driver is None:
            driver = (
                "psycopg2cffi"
                if platform.python_implementation() == "PyPy"
                else "psycopg2"
            )
        # libpq counts whole seconds, and treats 1 as 2.
        timeout = max(2, math.ceil(connectTimeout))
        arguments: Tuple[Any, ...] = ()
        keywords: Dict[str, Any] = {}
        if isinstance(connection, str):
            # psycopg2cffi refuses keyword arguments next to a string, so the
            # timeout goes into the string.
            arguments = (_withConnectTimeout(connection, timeout),)
        else:
            keywords = dict(connection)
            keywords.setdefault("connect_timeout", timeout)
        try:
            pool = adbapi.ConnectionPool(
                driver,
                *arguments,
                cp_min=minConnections,
                cp_max=maxConnections,
                # A pooled connection dies with a server restart; adbapi then
                # reconnects on the next call instead of failing forever.
                cp_reconnect=True,
                **_reactorArgument(reactor),
                **keywords,
            )
        except ImportError as error:
            raise ImportError(
                f"PostgreSQL session stores need the {driver} module"
                " (pip install 'tlsuite[postgresql]')"
            ) from error
        return cls(
            pool,
            clock,
            "postgresql",
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )

    # Schema.

    def createSchema(self) -> Deferred[None]:
        """
        Create the table and its index if they are missing (safe to repeat,
        and safe for processes starting together). Every other method does
        this first, once; call it to find out at startup whether the
        database works.

        @return: L{Deferred} firing when done, or failing with
            L{StoreUnavailableError} when the database cannot be reached.
        """
        d = self.pool.runInteraction(self._createSchemaIn)
        d.addErrback(self._unavailable)

        def ready(result: None) -> None:
            self._schemaReady = True

        d.addCallback(ready)
        return d

    def _createSchemaIn(self, cursor: Any) -> None:
        for statement in self._statements.schema:
            statement.execute(cursor)

    def _ensureSchema(self) -> Deferred[None]:
        if self._schemaReady:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._schemaWaiters.append(waiter)
        if len(self._schemaWaiters) == 1:
            # One attempt at a time; a failed attempt is retried by the next
            # call, so a database that was down at startup is picked up.
            self.createSchema().addBoth(self._schemaAttempted)
        return waiter

    def _schemaAttempted(self, result: Union[None, Failure]) -> None:
        waiters, self._schemaWaiters = self._schemaWaiters, []
        for waiter in waiters:
            if isinstance(result, Failure):
                waiter.errback(result)
            else:
                waiter.callback(None)

    # Running interactions.

    def _run(self, interaction: Callable[..., Any], **values: Any) -> Deferred[Any]:
        d = self._ensureSchema()
        d.addCallback(lambda _: self.pool.runInteraction(interaction, **values))
        d.addErrback(self._unavailable)
        d.addCallback(_raiseOutcome)
        return d

    def _unavailable(self, failure: Failure) -> Failure:
        if (
            failure.check(*self._unavailableErrors)
            or type(failure.value) is self._unclassifiedError
        ):
            raise StoreUnavailableError(
                f"the session database is unavailable: {failure.value}"
            ) from failure.value
        return failure

    def _checkSize(self, data: bytes) -> None:
        if len(data) > self.maxValueBytes:
            raise ValueTooLargeError(len(data), self.maxValueBytes)

    def _times(self) -> Dict[str, float]:
        now = self.clock.seconds()
        return {
            "now": now,
            "oldest": now - self.absoluteTimeout,
            "absolute": self.absoluteTimeout,
        }

    def _isLive(self, created: float, expiresAt: float, now: float) -> bool:
        return expiresAt >= now and created >= now - self.absoluteTimeout

    # ISessionStore.

    def create(
        self, data: bytes = b"", idleTimeout: Optional[float] = None
    ) -> Deferred[SessionRecord]:
        """
        See L{ISessionStore.create}.
        """
        try:
            data = bytes(data)
            self._checkSize(data)
            idle = checkIdleTimeout(idleTimeout) or self.idleTimeout
        except (ValueError, ValueTooLargeError):
            return fail()
        assert idle is not None
        now = self.clock.seconds()
        record = SessionRecord(
            sessionID=newSessionID(),
            version=1,
            data=data,
            created=now,
            lastSeen=now,
            idleTimeout=idle,
        )
        d = self._run(
            self._createIn,
            id=record.sessionID,
            version=1,
            data=data,
            created=now,
            now=now,
            idle=idle,
            expires=min(now + idle, now + self.absoluteTimeout),
        )
        d.addCallback(lambda _: record)
        return d

    def _createIn(self, cursor: Any, **values: Any) -> None:
        self._statements.insert.execute(cursor, **values)

    def load(self, sessionID: str) -> Deferred[Optional[SessionRecord]]:
        """
        See L{ISessionStore.load}. A row that no store could have written
        is logged, deleted and reported as no session.
        """
        if not isWellFormedSessionID(sessionID):
            return succeed(None)
        d = self._run(self._loadIn, id=sessionID, **self._times())
        d.addCallback(self._loaded, sessionID)
        return d

    def _loadIn(
        self, cursor: Any, **values: Any
    ) -> Tuple[Optional[SessionRecord], Optional[str]]:
        self._statements.select.execute(cursor, id=values["id"])
        row = cursor.fetchone()
        if row is None:
            return None, None
        try:
            record, expiresAt = _recordFromRow(values["id"], row)
        except _CorruptRowError as corrupt:
            self._statements.delete.execute(cursor, id=values["id"])
            return None, str(corrupt)
        if not self._isLive(record.created, expiresAt, values["now"]):
            return None, None
        return record, None

    def _loaded(
        self,
        result: Tuple[Optional[SessionRecord], Optional[str]],
        sessionID: str,
    ) -> Optional[SessionRecord]:
        record, corruption = result
        if corruption is not None:
            self.log.warn(
                "Deleted a corrupt session row ({corruption}); its user gets a"
                " new session",
                corruption=corruption,
                sessionID=sessionID,
            )
        return record

    def save(
        self,
        sessionID: str,
        expectedVersion: int,
        data: bytes,
        idleTimeout: Optional[float] = None,
    ) -> Deferred[int]:
        """
        See L{ISessionStore.save}.
        """
        try:
            data = bytes(data)
            self._checkSize(data)
            idle = checkIdleTimeout(idleTimeout)
        except (ValueError, ValueTooLargeError):
            return fail()
        if not isWellFormedSessionID(sessionID):
            return fail(SessionGoneError(sessionID))
        return self._run(
            self._saveIn,
            id=sessionID,
            version=expectedVersion,
            data=data,
            idle=idle,
            **self._times(),
        )

    def _saveIn(self, cursor: Any, **values: Any) -> Union[int, Exception]:
        statements = self._statements
        statements.save.execute(cursor, **values)
        if cursor.rowcount == 1:
            newVersion: int = values["version"] + 1
            return newVersion
        # Nothing matched: tell a newer version (a conflict) from a session
        # that is not there or no longer live (gone, never brought back).
        sessionID = values["id"]
        statements.select.execute(cursor, id=sessionID)
        row = cursor.fetchone()
        if row is None:
            return SessionGoneError(sessionID)
        try:
            record, expiresAt = _recordFromRow(sessionID, row)
        except _CorruptRowError:
            return SessionGoneError(sessionID)
        if not self._isLive(record.created, expiresAt, values["now"]):
            return SessionGoneError(sessionID)
        return ConflictError(sessionID, values["version"], record.version)

    def touch(self, sessionID: str) -> Deferred[None]:
        """
        See L{ISessionStore.touch}.
        """
        if not isWellFormedSessionID(sessionID):
            return fail(SessionGoneError(sessionID))
        return self._run(self._touchIn, id=sessionID, **self._times())

    def _touchIn(self, cursor: Any, **values: Any) -> Optional[Exception]:
        self._statements.touch.execute(cursor, **values)
        if cursor.rowcount != 1:
            return SessionGoneError(values["id"])
        return None

    def rotate(self, sessionID: str) -> Deferred[SessionRecord]:
        """
        See L{ISessionStore.rotate}. The new record keeps the data, version
        and creation time (rotation does not extend the absolute timeout)
        and counts as activity.

        @raise ConflictError: (in the L{Deferred}) in the unlikely case that
            other writers changed the session on every one of a few attempts.
        """
        if not isWellFormedSessionID(sessionID):
            return fail(SessionGoneError(sessionID))
        return self._run(
            self._rotateIn, id=sessionID, newID=newSessionID(), **self._times()
        )

    _ROTATE_ATTEMPTS = 3

    def _rotateIn(self, cursor: Any, **values: Any) -> Union[SessionRecord, Exception]:
        statements = self._statements
        sessionID, now = values["id"], values["now"]
        version = 0
        for _ in range(self._ROTATE_ATTEMPTS):
            statements.select.execute(cursor, id=sessionID)
            row = cursor.fetchone()
            if row is None:
                return SessionGoneError(sessionID)
            try:
                record, expiresAt = _recordFromRow(sessionID, row)
            except _CorruptRowError:
                return SessionGoneError(sessionID)
            if not self._isLive(record.created, expiresAt, now):
                return SessionGoneError(sessionID)
            version = record.version
            # Deleting by version makes the read above and this delete one
            # atomic step: a save in between leaves the row, and we read
            # again (now inside the write transaction).
            statements.deleteVersion.execute(cursor, id=sessionID, version=version)
            if cursor.rowcount != 1:
                continue
            rotated = attrs.evolve(record, sessionID=values["newID"], lastSeen=now)
            statements.insert.execute(
                cursor,
                id=rotated.sessionID,
                version=rotated.version,
                data=rotated.data,
                created=rotated.created,
                now=now,
                idle=rotated.idleTimeout,
                expires=min(
                    now + rotated.idleTimeout, rotated.created + self.absoluteTimeout
                ),
            )
            return rotated
        return ConflictError(sessionID, version)

    def delete(self, sessionID: str) -> Deferred[None]:
        """
        See L{ISessionStore.delete}.
        """
        if not isWellFormedSessionID(sessionID):
            return succeed(None)
        return self._run(self._deleteIn, id=sessionID)

    def _deleteIn(self, cursor: Any, **values: Any) -> None:
        self._statements.delete.execute(cursor, **values)

    # Housekeeping.

    def sweep(self, maxRows: int = 500) -> Deferred[int]:
        """
        Delete at most C{maxRows} expired sessions (one indexed C{DELETE}).

        Expiry is enforced on read whether or not this runs; sweeping only
        reclaims space. L{SessionSweepService} calls it on a timer.

        @return: L{Deferred} firing with the number of rows deleted.
        """
        if maxRows < 1:
            return succeed(0)
        return self._run(self._sweepIn, now=self.clock.seconds(), limit=maxRows)

    def _sweepIn(self, cursor: Any, **values: Any) -> int:
        self._statements.sweep.execute(cursor, **values)
        deleted: int = max(cursor.rowcount, 0)
        return deleted

    def close(self) -> None:
        """
        Close the connections and stop the pool's threads.
        """
        self.pool.close()


def _createPrivately(path: str) -> None:
    """
    Create the SQLite file C{path}, readable by its owner only, if it is
    missing: it holds session identifiers, which are as good as passwords
    (SQLite gives its -wal and -shm files the same permissions). An
    existing file keeps the permissions its owner chose.
    """
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        # The pool reports the problem, as StoreUnavailableError, on use.
        pass


def _withConnectTimeout(dsn: str, seconds: int) -> str:
    """
    The libpq connection string or URI C{dsn} with C{connect_timeout} set to
    C{seconds}, unless it sets one already.
    """
    if "connect_timeout" in dsn:
        return dsn
    if dsn.startswith(("postgresql://", "postgres://")):
        separator = "&" if "?" in dsn else "?"
        return f"{dsn}{separator}connect_timeout={seconds}"
    return f"{dsn} connect_timeout={seconds}".lstrip()


def _reactorArgument(reactor: Any) -> Dict[str, Any]:
    return {} if reactor is None else {"cp_reactor": reactor}


class _Sweepable(Protocol):
    def sweep(self, maxRows: int) -> Deferred[int]: ...


class SessionSweepService(Service):
    """
    Reclaims expired sessions in the background: every C{interval} seconds
    on C{clock}, calls C{store.sweep(batchSize)} up to C{maxBatches} times,
    stopping early once a batch comes back short. Errors are logged and the
    next tick tries again; stopping the service leaves no timer behind.

    Works with any store that has C{sweep(maxRows) -> Deferred[int]}
    (L{SQLSessionStore}, L{tlsession.stores.files.FileSessionStore}).
    """

    log = Logger()

    def __init__(
        self,
        store: _Sweepable,
        clock: IReactorTime,
        interval: float = 60.0,
        batchSize: int = 500,
        maxBatches: int = 10,
    ) -> None:
        if not (interval > 0 and batchSize > 0 and maxBatches > 0):
            raise ValueError("interval, batchSize and maxBatches must be positive")
        self.store = store
        self.clock = clock
        self.interval = interval
        self.batchSize = batchSize
        self.maxBatches = maxBatches
        #: Sessions removed since the service was created.
        self.removed = 0
        self._loop: Optional[LoopingCall] = None
        self._inFlight: Optional[Deferred[None]] = None

    def startService(self) -> None:
        """
        Start sweeping; the first sweep runs one interval from now.
        """
        super().startService()
        loop = LoopingCall(self._tick)
        loop.clock = self.clock
        self._loop = loop
        loop.start(self.interval, now=False)

    def stopService(self) -> Optional[Deferred[None]]:
        """
        Stop sweeping.

        @return: L{None}, or a L{Deferred} firing when a sweep in progress
            has finished.
        """
        super().stopService()
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        if self._inFlight is None:
            return None
        done: Deferred[None] = Deferred()

        def finished(result: object) -> object:
            done.callback(None)
            return result

        self._inFlight.addBoth(finished)
        return done

    def _tick(self) -> Deferred[None]:
        d = Deferred.fromCoroutine(self._sweepBatches())
        self._inFlight = d

        def finished(result: None) -> None:
            self._inFlight = None

        d.addBoth(finished)
        return d

    async def _sweepBatches(self) -> None:
        removed = 0
        try:
            for _ in range(self.maxBatches):
                count = await self.store.sweep(self.batchSize)
                removed += count
                if count < self.batchSize or self._loop is None:
                    break
        except StoreUnavailableError as error:
            self.log.warn(
                "Session sweep skipped: {error}; retrying in {interval}s",
                error=str(error),
                interval=self.interval,
            )
        except Exception:
            self.log.failure(
                "Session sweep failed; retrying in {interval}s", interval=self.interval
            )
        finally:
            self.removed += removed
        if removed:
            self.log.debug("Swept {removed} expired sessions", removed=removed)
