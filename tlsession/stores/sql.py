# -*- test-case-name: tests.unit.test_sqlstore -*-
"""
Sessions in an SQL database through L{twisted.enterprise.adbapi}: SQLite as
the embedded default, PostgreSQL (psycopg 3) with the same statements.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sqlite3
import time
from types import ModuleType
from typing import (
    Any,
    Callable,
    Dict,
    List,
    Mapping,
    Optional,
    Tuple,
    Union,
)

import attrs
from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tlsession.interfaces import (
    ConflictError,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
    SessionStoreError,
    StoreUnavailableError,
)
from tlsession.stores import (
    DEFAULT_ABSOLUTE_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_VALUE_BYTES,
    isWellFormedSessionID,
    newSessionID,
)
from tlsession.stores._checks import (
    InvalidArgumentError,
    StoreService,
    checkCreate,
    checkLimits,
    checkPositive,
    checkSave,
    checkSessionID,
)

__all__ = ["SQLSessionStore", "TABLE"]

#: The table sessions live in (one row per session).
TABLE = "tlsession_sessions"

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
        psycopg (pyformat) differ.
        """
        if paramstyle == "named":
            return cls(statement, None)
        if paramstyle == "pyformat":
            return cls(_PARAMETER.sub(r"%(\1)s", statement), None)
        if paramstyle == "qmark":
            names = tuple(_PARAMETER.findall(statement))
            return cls(_PARAMETER.sub("?", statement), names)
        raise InvalidArgumentError(
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
@implementer(ISessionStore)
class SQLSessionStore(StoreService):
    """
    Sessions in one table of an SQL database, reached through an adbapi
    L{ConnectionPool<adbapi.ConnectionPool>}.

    Build one with L{sqlite} or L{postgresql} and run it as a service (give
    it a parent, or call L{startService}): building it does no I/O;
    starting it opens the pool, whose threads connect on first use, and
    creates the table (L{TABLE}) and its index if they are missing;
    stopping it waits for the calls in progress and closes every connection
    and thread. Calls made while it is not running fail with
    L{StoreUnavailableError}.

    Saves are a compare-and-swap on the row's version (C{UPDATE ... WHERE
    version = ?}); rotation is one transaction; expiry is checked against
    C{clock} on every read and write, and L{sweep} (run by a
    L{tlsession.stores.sweep.SessionSweepService}) deletes expired rows in
    bounded batches. Any number of processes may share the database.

    @ivar openPool: makes a new, unstarted pool; called at each start.
    @ivar pool: the pool while the store runs, else C{None}.
    @ivar log: where corrupt rows are reported.
    """

    log = Logger()
    storeDescription = "the SQL session store"

    def __init__(
        self,
        openPool: Callable[[], adbapi.ConnectionPool],
        clock: IReactorTime,
        dialect: str = "sqlite",
        *,
        createSchema: bool = True,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        absoluteTimeout: float = DEFAULT_ABSOLUTE_TIMEOUT,
        maxValueBytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> None:
        """
        @param openPool: makes the pool when the store starts, for a DB-API
            module whose parameter style is qmark, named or pyformat;
            nothing may start it (L{startService} does).
        @param clock: the time every timestamp and expiry check uses.
        @param dialect: C{"sqlite"} or C{"postgresql"}.
        @param createSchema: create the table and its index at start if
            they are missing; without it, they must exist (made by the
            statements of L{createSchema}, for a database user that may not
            create tables).
        @param idleTimeout: default seconds of inactivity before expiry.
        @param absoluteTimeout: seconds after creation when sessions end.
        @param maxValueBytes: the largest session value accepted.
        @raise InvalidArgumentError: for an unknown dialect or unusable
            limits.
        """
        if dialect not in _DIALECTS:
            raise InvalidArgumentError(
                f"unknown SQL dialect {dialect!r} (known: {', '.join(_DIALECTS)})"
            )
        self.idleTimeout, self.absoluteTimeout, self.maxValueBytes = checkLimits(
            idleTimeout, absoluteTimeout, maxValueBytes
        )
        self.openPool = openPool
        self.clock = clock
        self.dialect = dialect
        self.createsSchema = createSchema
        self.pool: Optional[adbapi.ConnectionPool] = None
        # Known once the pool (and so the DB-API module) exists.
        self._statements: _Statements
        self._unavailableErrors: Tuple[type, ...] = (adbapi.ConnectionLost,)
        self._unclassifiedError: Optional[type] = None
        self._schemaReady = not createSchema
        self._schemaWaiters: List[Deferred[None]] = []
        self._pending = 0
        self._idleWaiters: List[Deferred[None]] = []

    @classmethod
    def sqlite(
        cls,
        path: str,
        clock: IReactorTime,
        *,
        reactor: Any = None,
        busyTimeout: float = 5.0,
        createSchema: bool = True,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        absoluteTimeout: float = DEFAULT_ABSOLUTE_TIMEOUT,
        maxValueBytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> SQLSessionStore:
        """
        A store in the SQLite database file C{path}, created (readable by
        its owner only) when the store starts if it is missing.

        SQLite lets one writer in at a time, so the pool holds a single
        connection (one thread); the database runs in WAL mode so that other
        processes can read while one writes, and waits at most
        C{busyTimeout} seconds for another process's write lock before the
        call fails with L{StoreUnavailableError}.

        @param reactor: the reactor that runs the pool's thread and delivers
            its results (default: the global one).
        @raise InvalidArgumentError: for unusable limits or C{busyTimeout}.
        """
        checkPositive("busyTimeout", busyTimeout)
        busyMilliseconds = max(1, int(busyTimeout * 1000))

        def prepare(connection: Any) -> None:
            cursor = connection.cursor()
            try:
                _enableWAL(cursor, time.monotonic() + busyTimeout)
                cursor.execute(f"PRAGMA busy_timeout = {busyMilliseconds}")
                # WAL with synchronous=NORMAL is safe against corruption; a
                # power cut may forget the last sessions written, which is
                # the same as their users logging in again.
                cursor.execute("PRAGMA synchronous = NORMAL")
            finally:
                cursor.close()

        def openPool() -> adbapi.ConnectionPool:
            _createPrivately(path)
            return adbapi.ConnectionPool(
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
            openPool,
            clock,
            "sqlite",
            createSchema=createSchema,
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
        createSchema: bool = True,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        absoluteTimeout: float = DEFAULT_ABSOLUTE_TIMEOUT,
        maxValueBytes: int = DEFAULT_MAX_VALUE_BYTES,
    ) -> SQLSessionStore:
        """
        A store in a PostgreSQL database, through psycopg 3.

        @param connection: a libpq connection string or URI
            (C{"host=/run/postgresql dbname=site"}), or libpq's connection
            parameters as a mapping (C{{"host": ..., "dbname": ...}}).
        @param reactor: the reactor that runs the pool's threads and
            delivers their results (default: the global one).
        @param minConnections: connections (and threads) kept open.
        @param maxConnections: the most connections (and threads) in use.
        @param connectTimeout: seconds to wait for a connection (libpq's
            C{connect_timeout}, unless C{connection} sets it; libpq waits at
            least 2 and counts whole seconds).
        @raise ImportError: when psycopg is not installed.
        @raise InvalidArgumentError: for a connection string libpq cannot
            parse, or unusable limits.
        """
        psycopg = _psycopg()
        for name, count in [
            ("minConnections", minConnections),
            ("maxConnections", maxConnections),
        ]:
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise InvalidArgumentError(
                    f"{name} must be a positive integer, not {count!r}"
                )
        if minConnections > maxConnections:
            raise InvalidArgumentError(
                f"minConnections ({minConnections}) cannot exceed"
                f" maxConnections ({maxConnections})"
            )
        timeout = max(2, math.ceil(checkPositive("connectTimeout", connectTimeout)))
        conninfo = ""
        keywords: Dict[str, Any] = {}
        if isinstance(connection, str):
            conninfo = connection
            try:
                given: Mapping[str, Any] = psycopg.conninfo.conninfo_to_dict(conninfo)
            except psycopg.Error as error:
                raise InvalidArgumentError(
                    f"not a PostgreSQL connection string: {error}"
                ) from error
        else:
            keywords = dict(connection)
            given = keywords
        if "connect_timeout" not in given:
            keywords["connect_timeout"] = timeout

        def openPool() -> adbapi.ConnectionPool:
            return adbapi.ConnectionPool(
                "psycopg",
                conninfo,
                cp_min=minConnections,
                cp_max=maxConnections,
                # A pooled connection dies with a server restart; adbapi then
                # reconnects on the next call instead of failing forever.
                cp_reconnect=True,
                **_reactorArgument(reactor),
                **keywords,
            )

        return cls(
            openPool,
            clock,
            "postgresql",
            createSchema=createSchema,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )

    # The service.

    def startService(self) -> None:
        """
        Open the connection pool (its threads connect on first use) and,
        with C{createSchema}, start creating the table and its index; calls
        made meanwhile wait for that. A database that cannot be reached yet
        is logged, and tried again by the next call.

        @raise InvalidArgumentError: when the pool's DB-API module has a
            parameter style the store cannot write.
        """
        pool = self.openPool()
        dbapi = pool.dbapi
        try:
            statements = _Statements(
                _DIALECTS[self.dialect], getattr(dbapi, "paramstyle", "qmark")
            )
        except BaseException:
            # The pool would start its threads with the reactor otherwise.
            pool.close()
            raise
        self._statements = statements
        self._unavailableErrors = (adbapi.ConnectionLost,) + tuple(
            error
            for error in (
                getattr(dbapi, "OperationalError", None),
                getattr(dbapi, "InterfaceError", None),
            )
            if isinstance(error, type)
        )
        # Drivers raise the bare base class for what they cannot classify,
        # such as a connection the server closed mid-query.
        self._unclassifiedError = getattr(dbapi, "DatabaseError", None)
        pool.start()
        self.pool = pool
        super().startService()
        if not self._schemaReady:
            self._ensureSchema().addErrback(self._schemaFailed)

    def stopService(self) -> Deferred[None]:
        """
        Refuse new calls, wait for the ones in progress, then close every
        connection and stop the pool's threads.

        @return: L{Deferred} firing once they are closed.
        """
        super().stopService()
        pool, self.pool = self.pool, None
        d = self._whenIdle()

        def close(_: None) -> None:
            if pool is not None:
                pool.close()

        d.addCallback(close)
        return d

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        """
        Count C{d} as a call in progress until it fires.
        """
        self._pending += 1

        def finished(result: object) -> object:
            self._pending -= 1
            if self._pending == 0:
                waiters, self._idleWaiters = self._idleWaiters, []
                for waiter in waiters:
                    waiter.callback(None)
            return result

        d.addBoth(finished)
        return d

    def _whenIdle(self) -> Deferred[None]:
        if self._pending == 0:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._idleWaiters.append(waiter)
        return waiter

    # Schema.

    def createSchema(self) -> Deferred[None]:
        """
        Create the table and its index if they are missing (safe to repeat,
        and safe for processes starting together). A store started with
        C{createSchema} does this itself; call it to find out whether the
        database works.

        @return: L{Deferred} firing when done, or failing with
            L{StoreUnavailableError} when the database cannot be reached or
            the store is not running.
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        assert self.pool is not None
        d = self._track(self.pool.runInteraction(self._createSchemaIn))
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

    def _schemaFailed(self, failure: Failure) -> None:
        if failure.check(StoreUnavailableError):
            self.log.warn(
                "Cannot create the session table yet ({error}); the next"
                " call tries again",
                error=str(failure.value),
            )
        else:
            self.log.failure(
                "Cannot create the session table; the next call tries again",
                failure,
            )

    # Running interactions.

    def _run(self, interaction: Callable[..., Any], **values: Any) -> Deferred[Any]:
        pool = self.pool
        assert pool is not None
        d = self._ensureSchema()
        d.addCallback(lambda _: pool.runInteraction(interaction, **values))
        d.addErrback(self._unavailable)
        d.addCallback(_raiseOutcome)
        return self._track(d)

    def _unavailable(self, failure: Failure) -> Failure:
        if (
            failure.check(*self._unavailableErrors)
            or type(failure.value) is self._unclassifiedError
        ):
            raise StoreUnavailableError(
                f"the session database is unavailable: {failure.value}"
            ) from failure.value
        return failure

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
            self.checkRunning()
            data, idle = checkCreate(data, idleTimeout, self.maxValueBytes)
        except SessionStoreError:
            return fail()
        if idle is None:
            idle = self.idleTimeout
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
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
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
            self.checkRunning()
            version, data, idle = checkSave(
                sessionID, expectedVersion, data, idleTimeout, self.maxValueBytes
            )
        except SessionStoreError:
            return fail()
        return self._run(
            self._saveIn,
            id=sessionID,
            version=version,
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
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
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
        try:
            self.checkRunning()
            checkSessionID(sessionID)
        except SessionStoreError:
            return fail()
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
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
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
        reclaims space. L{tlsession.stores.sweep.SessionSweepService} calls
        it on a timer.

        @return: L{Deferred} firing with the number of rows deleted.
        """
        try:
            self.checkRunning()
        except SessionStoreError:
            return fail()
        if maxRows < 1:
            return succeed(0)
        return self._run(self._sweepIn, now=self.clock.seconds(), limit=maxRows)

    def _sweepIn(self, cursor: Any, **values: Any) -> int:
        self._statements.sweep.execute(cursor, **values)
        deleted: int = max(cursor.rowcount, 0)
        return deleted


def _psycopg() -> ModuleType:
    """
    The psycopg 3 module, with its C{conninfo} submodule loaded.

    @raise ImportError: it is not installed, or finds no libpq.
    """
    try:
        importlib.import_module("psycopg.conninfo")
        return importlib.import_module("psycopg")
    except ImportError as error:
        raise ImportError(
            "PostgreSQL session stores need psycopg 3"
            f" (pip install 'tlsuite[postgresql]'): {error}"
        ) from error


def _enableWAL(cursor: Any, deadline: float) -> None:
    """
    Put the SQLite database in WAL mode, waiting until C{deadline} (on
    L{time.monotonic}) for other connections: the switch fails at once,
    without the busy timeout, when another connection is making it at the
    same moment (stores starting together on a new file).

    @raise sqlite3.OperationalError: the database stayed locked.
    """
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.fetchall()
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


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


def _reactorArgument(reactor: Any) -> Dict[str, Any]:
    return {} if reactor is None else {"cp_reactor": reactor}
