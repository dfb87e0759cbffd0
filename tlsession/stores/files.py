# -*- test-case-name: tests.unit.test_filestore -*-
"""
Sessions in a directory, one file per session: atomic replacement, the
version in each file's header for compare-and-swap, a lock shared by the
processes of one host, and a bounded sweep.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import stat
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from tlsession.interfaces import (
    ConflictError,
    ISessionStore,
    SessionGoneError,
    SessionRecord,
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
    StoreService,
    checkCreate,
    checkLimits,
    checkPositive,
    checkSave,
    checkSessionID,
)

__all__ = ["FileSessionStore", "LOCK_FILE", "MAGIC"]

#: The first bytes of every session file (format version 1).
MAGIC = b"TLSESS\x00\x01"
#: The file, in the session directory, that writers lock with C{flock}.
LOCK_FILE = ".lock"

# magic, version, created, last seen, idle timeout, data length; then the
# CRC-32 of those fields and the data, then the data.
_FIELDS = struct.Struct(">8sQdddI")
_CRC = struct.Struct(">I")
_HEADER_SIZE = _FIELDS.size + _CRC.size
# Files are written under the lock only, so any temporary file found while
# holding it was left by a writer that died.
_TEMPORARY_PREFIX = ".tmp-"
# Larger files are not read whole: nothing that big is a session.
_MAX_FILE_BYTES = 64 * 1024 * 1024

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)

_T = TypeVar("_T")


class _CorruptFileError(Exception):
    """
    A session file that no store wrote whole.
    """


def encodeRecord(record: SessionRecord) -> bytes:
    """
    The file contents for C{record}.
    """
    fields = _FIELDS.pack(
        MAGIC,
        record.version,
        record.created,
        record.lastSeen,
        record.idleTimeout,
        len(record.data),
    )
    checksum = zlib.crc32(record.data, zlib.crc32(fields))
    return fields + _CRC.pack(checksum) + record.data


def decodeRecord(sessionID: str, contents: bytes) -> SessionRecord:
    """
    The record in a session file's C{contents}.

    @raise _CorruptFileError: for anything L{encodeRecord} would not make.
    """
    if len(contents) < _HEADER_SIZE:
        raise _CorruptFileError(f"{len(contents)} bytes is too short")
    fields = contents[: _FIELDS.size]
    magic, version, created, lastSeen, idleTimeout, length = _FIELDS.unpack(fields)
    if magic != MAGIC:
        raise _CorruptFileError("not a session file")
    (checksum,) = _CRC.unpack_from(contents, _FIELDS.size)
    data = contents[_HEADER_SIZE:]
    if len(data) != length:
        raise _CorruptFileError(f"{len(data)} bytes of data, not {length}")
    if zlib.crc32(data, zlib.crc32(fields)) != checksum:
        raise _CorruptFileError("checksum mismatch")
    if version < 1 or not all(map(math.isfinite, (created, lastSeen, idleTimeout))):
        raise _CorruptFileError("impossible header values")
    if idleTimeout <= 0:
        raise _CorruptFileError(f"idle timeout {idleTimeout}")
    return SessionRecord(
        sessionID=sessionID,
        version=version,
        data=data,
        created=created,
        lastSeen=lastSeen,
        idleTimeout=idleTimeout,
    )


_processLocks: Dict[str, threading.Lock] = {}
_processLocksGuard = threading.Lock()


def _processLockFor(directory: str) -> threading.Lock:
    """
    The lock every store on C{directory} in this process shares: C{flock}
    excludes other processes, this excludes other threads here (and keeps
    them from polling C{flock} against each other).
    """
    key = os.path.realpath(directory)
    with _processLocksGuard:
        return _processLocks.setdefault(key, threading.Lock())


@implementer(ISessionStore)
class FileSessionStore(StoreService):
    """
    Sessions as files in one directory, shared by the processes of one host
    (it needs POSIX C{flock}, so no network file systems).

    Run it as a service (give it a parent, or call L{startService}):
    building it touches no file; starting it creates the directory, or
    checks the one there; calls made while it is not running fail with
    L{StoreUnavailableError}.

    Each session is the file named by its identifier, validated before any
    path is built (an identifier from a client never becomes a path
    otherwise). Writes go to a temporary file renamed over the old one, so
    a reader sees the old or the new session, never half of one. Every
    change happens under an exclusive lock: a per-process lock, then
    C{flock} on L{LOCK_FILE}; saves compare the version in the file's
    header. The directory is made 0700 and the files 0600, and a directory
    others can read is refused: file names are session identifiers.

    The file operations run synchronously, in the calling (reactor) thread,
    and the returned L{Deferred}s have already fired. A load, which every
    request makes, is an open and a read of a small file: about 15
    microseconds on a local disk, several times less than handing it to a
    thread and back (about 100). A save is dominated by the rename (about
    0.25 milliseconds on ext4), and only modified sessions are saved. The
    one wait, for a lock another process holds, is bounded by
    C{lockTimeout} (then L{StoreUnavailableError}), and the critical
    sections it waits for are a few system calls each. Put the directory on
    a local disk: a slow or network file system would stall the reactor.

    @ivar log: where corrupt files are reported.
    """

    log = Logger()
    storeDescription = "the file session store"

    def __init__(
        self,
        directory: str,
        clock: IReactorTime,
        *,
        idleTimeout: float = DEFAULT_IDLE_TIMEOUT,
        absoluteTimeout: float = DEFAULT_ABSOLUTE_TIMEOUT,
        maxValueBytes: int = DEFAULT_MAX_VALUE_BYTES,
        lockTimeout: float = 1.0,
        durable: bool = False,
    ) -> None:
        """
        @param directory: where the session files go; created (0700) at
            start if missing.
        @param clock: the time every timestamp and expiry check uses.
        @param idleTimeout: default seconds of inactivity before expiry.
        @param absoluteTimeout: seconds after creation when sessions end.
        @param maxValueBytes: the largest session value accepted.
        @param lockTimeout: the longest wait, in seconds, for the directory
            lock another process holds.
        @param durable: C{fsync} each write and the directory, so sessions
            also survive a power cut, at the cost of a disk flush per write.
            Without it they survive process restarts; a crash of the whole
            machine may lose the latest writes, and files it truncated are
            treated as gone.

        @raise InvalidArgumentError: for unusable limits or C{lockTimeout}.
        """
        self.idleTimeout, self.absoluteTimeout, self.maxValueBytes = checkLimits(
            idleTimeout, absoluteTimeout, maxValueBytes
        )
        self.lockTimeout = checkPositive("lockTimeout", lockTimeout)
        self.directory = os.path.abspath(directory)
        self.clock = clock
        self.durable = durable
        self._lockPath = os.path.join(self.directory, LOCK_FILE)
        self._processLock: Optional[threading.Lock] = None
        self._scan: Optional[os._ScandirIterator[str]] = None

    # The service.

    def startService(self) -> None:
        """
        Create the directory (0700) if it is missing, and check that other
        users cannot read it.

        @raise StoreUnavailableError: if the directory cannot be created, or
            can be read by other users; the store does not start.
        """
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            mode = os.stat(self.directory).st_mode
        except OSError as error:
            raise StoreUnavailableError(
                f"cannot use the session directory {self.directory}: {error}"
            ) from error
        if stat.S_IMODE(mode) & 0o077:
            raise StoreUnavailableError(
                f"the session directory {self.directory} is open to other users"
                f" (mode {stat.S_IMODE(mode):04o}); its file names are session"
                " identifiers: make it 0700"
            )
        self._processLock = _processLockFor(self.directory)
        super().startService()

    def stopService(self) -> Deferred[None]:
        """
        Refuse new calls and release the directory scan a sweep left open.
        The store holds nothing else: every call finishes before it returns,
        and takes and releases its locks.

        @return: a L{Deferred} that has fired.
        """
        super().stopService()
        self._closeScan()
        return succeed(None)

    # Running operations.

    def _call(self, operation: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """
        C{operation(*args)}, run now, as a L{Deferred}: every error it
        raises, and a call while the store is not running, come back as a
        failed one.
        """
        try:
            self.checkRunning()
            return succeed(operation(*args))
        except OSError as error:
            return fail(
                StoreUnavailableError(
                    f"the session directory {self.directory} is unavailable: {error}"
                )
            )
        except Exception:
            return fail()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        deadline = time.monotonic() + self.lockTimeout
        processLock = self._processLock
        assert processLock is not None
        if not processLock.acquire(timeout=self.lockTimeout):
            raise StoreUnavailableError(
                f"the session directory {self.directory} stayed locked by"
                f" another thread for {self.lockTimeout}s"
            )
        try:
            fd = os.open(self._lockPath, os.O_RDWR | os.O_CREAT | _O_CLOEXEC, 0o600)
            try:
                self._flock(fd, deadline)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            processLock.release()

    def _flock(self, fd: int, deadline: float) -> None:
        # Polling with LOCK_NB bounds the wait, which a blocking flock would
        # not; the holder keeps the lock for a few system calls only.
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise StoreUnavailableError(
                    f"another process held {self._lockPath} for over"
                    f" {self.lockTimeout}s"
                )
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.02)

    # Files.

    def _path(self, sessionID: str) -> str:
        return os.path.join(self.directory, sessionID)

    def _read(self, sessionID: str) -> Optional[SessionRecord]:
        """
        The record in C{sessionID}'s file, live or not, or C{None}.

        @raise _CorruptFileError: when the file is not a session file.
        """
        try:
            # O_NONBLOCK: a FIFO planted here must not hang the reactor.
            fd = os.open(
                self._path(sessionID),
                os.O_RDONLY | os.O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC,
            )
        except FileNotFoundError:
            return None
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise _CorruptFileError("a symbolic link") from error
            raise
        try:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode):
                raise _CorruptFileError("not a regular file")
            if status.st_size > _MAX_FILE_BYTES:
                raise _CorruptFileError(f"{status.st_size} bytes is too large")
            file = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        with file:
            # Session files are never changed in place (they are replaced),
            # so the size read is the size of what this descriptor reads.
            contents = file.read(status.st_size + 1)
        return decodeRecord(sessionID, contents)

    def _write(self, record: SessionRecord) -> None:
        contents = encodeRecord(record)
        temporary = os.path.join(
            self.directory, _TEMPORARY_PREFIX + newSessionID()[:16]
        )
        fd = os.open(
            temporary,
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC,
            0o600,
        )
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(contents)
                if self.durable:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temporary, self._path(record.sessionID))
        except BaseException:
            self._remove(temporary)
            raise
        if self.durable:
            self._syncDirectory()

    def _syncDirectory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY | _O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _remove(self, path: str) -> bool:
        """
        Remove C{path} if it is there; a failure is logged, not raised, as
        it comes from an entry that is of no use anyway.

        @return: whether nothing is left at C{path}.
        """
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as error:
            self.log.error(
                "Cannot remove {path} from the session directory: {error}",
                path=path,
                error=str(error),
            )
            return False
        return True

    def _freshID(self) -> str:
        # With 256 random bits a second try is already a miracle.
        for _ in range(3):
            sessionID = newSessionID()
            if not os.path.lexists(self._path(sessionID)):
                return sessionID
        raise StoreUnavailableError("no fresh session identifier: broken randomness?")

    def _isLive(self, record: SessionRecord, now: float) -> bool:
        return (
            now - record.lastSeen <= record.idleTimeout
            and now - record.created <= self.absoluteTimeout
        )

    def _discardCorrupt(self, sessionID: str, error: _CorruptFileError) -> None:
        if self._remove(self._path(sessionID)):
            self.log.warn(
                "Removed a corrupt session file ({corruption}); its user gets a"
                " new session",
                corruption=str(error),
                sessionID=sessionID,
            )

    def _liveRecordLocked(self, sessionID: str, now: float) -> SessionRecord:
        """
        The live record of C{sessionID}, read under the lock; expired and
        corrupt files are removed on the way.

        @raise SessionGoneError: when there is none.
        """
        try:
            record = self._read(sessionID)
        except _CorruptFileError as corrupt:
            self._discardCorrupt(sessionID, corrupt)
            raise SessionGoneError(sessionID) from None
        if record is None:
            raise SessionGoneError(sessionID)
        if not self._isLive(record, now):
            self._remove(self._path(sessionID))
            raise SessionGoneError(sessionID)
        return record

    # ISessionStore.

    def create(
        self, data: bytes = b"", idleTimeout: Optional[float] = None
    ) -> Deferred[SessionRecord]:
        """
        See L{ISessionStore.create}.
        """
        return self._call(self._create, data, idleTimeout)

    def _create(self, data: bytes, idleTimeout: Optional[float]) -> SessionRecord:
        data, idle = checkCreate(data, idleTimeout, self.maxValueBytes)
        if idle is None:
            idle = self.idleTimeout
        now = self.clock.seconds()
        with self._locked():
            record = SessionRecord(
                sessionID=self._freshID(),
                version=1,
                data=data,
                created=now,
                lastSeen=now,
                idleTimeout=idle,
            )
            self._write(record)
        return record

    def load(self, sessionID: str) -> Deferred[Optional[SessionRecord]]:
        """
        See L{ISessionStore.load}. Reading takes no lock: files are replaced
        whole. A corrupt file is logged, removed and reported as no session.
        """
        return self._call(self._load, sessionID)

    def _load(self, sessionID: str) -> Optional[SessionRecord]:
        if not isWellFormedSessionID(sessionID):
            return None
        now = self.clock.seconds()
        try:
            record = self._read(sessionID)
        except _CorruptFileError:
            with self._locked():
                # Read again under the lock: only a file still corrupt now
                # is removed.
                try:
                    self._read(sessionID)
                except _CorruptFileError as corrupt:
                    self._discardCorrupt(sessionID, corrupt)
            return None
        if record is None or not self._isLive(record, now):
            return None
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
        return self._call(self._save, sessionID, expectedVersion, data, idleTimeout)

    def _save(
        self,
        sessionID: str,
        expectedVersion: int,
        data: bytes,
        idleTimeout: Optional[float],
    ) -> int:
        version, data, idle = checkSave(
            sessionID, expectedVersion, data, idleTimeout, self.maxValueBytes
        )
        now = self.clock.seconds()
        with self._locked():
            record = self._liveRecordLocked(sessionID, now)
            if record.version != version:
                raise ConflictError(sessionID, version, record.version)
            saved = attrs.evolve(
                record,
                version=record.version + 1,
                data=data,
                lastSeen=now,
                idleTimeout=record.idleTimeout if idle is None else idle,
            )
            self._write(saved)
        return saved.version

    def touch(self, sessionID: str) -> Deferred[None]:
        """
        See L{ISessionStore.touch}.
        """
        return self._call(self._touch, sessionID)

    def _touch(self, sessionID: str) -> None:
        checkSessionID(sessionID)
        now = self.clock.seconds()
        with self._locked():
            record = self._liveRecordLocked(sessionID, now)
            self._write(attrs.evolve(record, lastSeen=now))

    def rotate(self, sessionID: str) -> Deferred[SessionRecord]:
        """
        See L{ISessionStore.rotate}. The file is renamed, so the old
        identifier is gone the moment the new one exists; the record keeps
        its data, version and creation time, and counts as active.
        """
        return self._call(self._rotate, sessionID)

    def _rotate(self, sessionID: str) -> SessionRecord:
        checkSessionID(sessionID)
        now = self.clock.seconds()
        with self._locked():
            record = self._liveRecordLocked(sessionID, now)
            rotated = attrs.evolve(record, sessionID=self._freshID(), lastSeen=now)
            os.rename(self._path(sessionID), self._path(rotated.sessionID))
            self._write(rotated)
        return rotated

    def delete(self, sessionID: str) -> Deferred[None]:
        """
        See L{ISessionStore.delete}.
        """
        return self._call(self._delete, sessionID)

    def _delete(self, sessionID: str) -> None:
        if not isWellFormedSessionID(sessionID):
            return
        with self._locked():
            try:
                os.unlink(self._path(sessionID))
            except FileNotFoundError:
                pass

    # Housekeeping.

    def sweep(self, maxFiles: int = 500) -> Deferred[int]:
        """
        Look at the next C{maxFiles} entries of the directory (carrying on
        where the previous sweep stopped, and starting over once it has seen
        them all) and remove the expired and corrupt session files among
        them, and temporary files left by writers that died.

        Expiry is enforced on read whether or not this runs; sweeping only
        reclaims space. L{tlsession.stores.sweep.SessionSweepService} calls
        it on a timer.

        @return: L{Deferred} firing with the number of session files removed.
        """
        return self._call(self._sweep, maxFiles)

    def _sweep(self, maxFiles: int) -> int:
        if maxFiles < 1:
            return 0
        now = self.clock.seconds()
        removed = 0
        with self._locked():
            for name in self._nextEntries(maxFiles):
                if name.startswith(_TEMPORARY_PREFIX):
                    self._remove(os.path.join(self.directory, name))
                    continue
                if not isWellFormedSessionID(name):
                    continue
                try:
                    record = self._read(name)
                except _CorruptFileError as corrupt:
                    self._discardCorrupt(name, corrupt)
                    removed += 1
                    continue
                if record is not None and not self._isLive(record, now):
                    self._remove(self._path(name))
                    removed += 1
        return removed

    def _nextEntries(self, limit: int) -> List[str]:
        if self._scan is None:
            self._scan = os.scandir(self.directory)
        names = []
        for entry in self._scan:
            names.append(entry.name)
            if len(names) >= limit:
                return names
        self._closeScan()
        return names

    def _closeScan(self) -> None:
        scan, self._scan = self._scan, None
        if scan is not None:
            scan.close()
