# -*- test-case-name: tests.unit.test_filestore -*-
"""
Tests for L{tlsession.stores.files}: the file session store, on a temporary
directory, and its lifecycle as a service. Its operations are synchronous,
so the tests need no reactor; the cross-process test runs child processes on
the same directory.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
from typing import Any, Dict, List, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.sessionstore_conformance import SessionStoreConformance
from tlsession.interfaces import (
    ConflictError,
    SessionGoneError,
    SessionRecord,
    StoreUnavailableError,
    ValueTooLargeError,
)
from tlsession.stores import newSessionID
from tlsession.stores._checks import InvalidArgumentError
from tlsession.stores.files import LOCK_FILE, MAGIC, FileSessionStore
from tlsession.stores.sweep import SessionSweepService

CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
START = 1_000_000.0


def temporaryDirectory(testCase: SynchronousTestCase) -> str:
    """
    A fresh directory (0700) under the system's temporary directory,
    removed when the test ends.
    """
    path = tempfile.mkdtemp(prefix="tlfiles-")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def result(d: Deferred[Any]) -> Any:
    """
    The result of an already-fired L{Deferred}, raising its failure.
    """
    results: List[Any] = []
    d.addBoth(results.append)
    (outcome,) = results
    if isinstance(outcome, Failure):
        outcome.raiseException()
    return outcome


def startedStore(
    testCase: SynchronousTestCase, directory: str, clock: Clock, **kw: Any
) -> FileSessionStore:
    """
    A started file store on C{directory}, stopped when the test ends.
    """
    store = FileSessionStore(directory, clock, **kw)
    store.startService()
    testCase.addCleanup(stopped, testCase, store)
    return store


def stopped(testCase: SynchronousTestCase, store: FileSessionStore) -> None:
    """
    Stop C{store}, checking that it has finished stopping at once.
    """
    if store.running:
        testCase.successResultOf(store.stopService())


def sessionFiles(directory: str) -> List[str]:
    """
    The names in C{directory} other than the lock file.
    """
    return sorted(name for name in os.listdir(directory) if name != LOCK_FILE)


class FileConformanceTests(SessionStoreConformance, TestCase):
    """
    The file store passes the store conformance suite.
    """

    def createStore(
        self,
        clock: Clock,
        idleTimeout: float,
        absoluteTimeout: float,
        maxValueBytes: int,
    ) -> FileSessionStore:
        return FileSessionStore(
            os.path.join(temporaryDirectory(self), "sessions"),
            clock,
            idleTimeout=idleTimeout,
            absoluteTimeout=absoluteTimeout,
            maxValueBytes=maxValueBytes,
        )


class FileStoreTests(SynchronousTestCase):
    """
    What the file store does beyond the conformance suite.
    """

    def setUp(self) -> None:
        self.directory = os.path.join(temporaryDirectory(self), "sessions")
        self.clock = Clock()
        self.clock.advance(START)

    def store(self, **kw: Any) -> FileSessionStore:
        return startedStore(self, self.directory, self.clock, **kw)

    def test_privateDirectoryAndFiles(self) -> None:
        """
        The directory is created 0700, and the session and lock files 0600;
        each session is one file named by its identifier, holding its
        version in the header.
        """
        nested = os.path.join(self.directory, "deeper")
        store = startedStore(self, nested, self.clock)
        record = result(store.create(b"x"))
        result(store.save(record.sessionID, 1, b"y"))
        self.assertEqual(stat.S_IMODE(os.stat(nested).st_mode), 0o700)
        self.assertEqual(sessionFiles(nested), [record.sessionID])
        for name in [record.sessionID, LOCK_FILE]:
            mode = os.stat(os.path.join(nested, name)).st_mode
            self.assertEqual(stat.S_IMODE(mode), 0o600, name)
        with open(os.path.join(nested, record.sessionID), "rb") as file:
            header = file.read(16)
        self.assertEqual(header[:8], MAGIC)
        self.assertEqual(int.from_bytes(header[8:], "big"), 2)

    def test_openDirectoryRefused(self) -> None:
        """
        A directory other users can read is refused (its file names are
        session identifiers) and left as it was; so is a path that is not a
        directory. The store does not start, and calls fail as unavailable.
        """
        os.makedirs(self.directory, mode=0o755)
        os.chmod(self.directory, 0o755)
        store = FileSessionStore(self.directory, self.clock)
        with self.assertRaises(StoreUnavailableError) as caught:
            store.startService()
        self.assertIn("make it 0700", str(caught.exception))
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o755)
        self.assertFalse(store.running)
        with self.assertRaises(StoreUnavailableError):
            result(store.create())
        self.assertEqual(os.listdir(self.directory), [])
        path = os.path.join(self.directory, "file")
        with open(path, "w"):
            pass
        with self.assertRaises(StoreUnavailableError):
            FileSessionStore(path, self.clock).startService()

    def test_unknownIdentifiersCreateNothing(self) -> None:
        """
        Saving, touching, rotating or deleting an identifier the store never
        issued (well-formed or a path) fails or does nothing, and creates no
        file anywhere.
        """
        store = self.store()
        parent = os.path.dirname(self.directory)
        before = sorted(os.listdir(parent))
        for sessionID in [newSessionID(), "../escaped", "../" + "a" * 40, LOCK_FILE]:
            with self.assertRaises(SessionGoneError):
                result(store.save(sessionID, 1, b"planted"))
            with self.assertRaises(SessionGoneError):
                result(store.touch(sessionID))
            with self.assertRaises(SessionGoneError):
                result(store.rotate(sessionID))
            result(store.delete(sessionID))
        self.assertEqual(sorted(os.listdir(parent)), before)
        self.assertEqual(sessionFiles(self.directory), [])
        self.assertTrue(os.path.exists(os.path.join(self.directory, LOCK_FILE)))

    def test_twoStoresOneDirectory(self) -> None:
        """
        Two stores on one directory (two app processes) see each other's
        sessions, and of two saves from the same version exactly one wins.
        """
        a, b = self.store(), self.store()
        record = result(a.create(b"start"))
        self.assertEqual(result(b.load(record.sessionID)), record)
        self.assertEqual(result(b.save(record.sessionID, 1, b"b")), 2)
        with self.assertRaises(ConflictError) as caught:
            result(a.save(record.sessionID, 1, b"a"))
        self.assertEqual(caught.exception.current, 2)
        loaded = result(a.load(record.sessionID))
        self.assertEqual((loaded.version, loaded.data), (2, b"b"))
        rotated = result(a.rotate(record.sessionID))
        self.assertIsNone(result(b.load(record.sessionID)))
        self.assertEqual(result(b.load(rotated.sessionID)), rotated)

    def test_rotationKeepsTheAbsoluteTimeout(self) -> None:
        """
        Rotating a session does not extend its absolute lifetime.
        """
        store = self.store(idleTimeout=100, absoluteTimeout=150)
        record = result(store.create())
        self.clock.advance(90)
        rotated = result(store.rotate(record.sessionID))
        self.assertEqual(rotated.created, record.created)
        self.clock.advance(61)
        self.assertIsNone(result(store.load(rotated.sessionID)))

    def test_threadsLoseNoUpdate(self) -> None:
        """
        Threads incrementing one counter through two stores on one
        directory, retrying on conflicts, lose no increment.
        """
        stores = [self.store(), self.store()]
        record = result(stores[0].create(b"0"))
        errors: List[BaseException] = []

        def increment(store: FileSessionStore) -> None:
            try:
                for _ in range(50):
                    addOne(store, record.sessionID)
            except BaseException as error:
                errors.append(error)

        threads = [
            threading.Thread(target=increment, args=(stores[i % 2],)) for i in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        self.assertEqual(errors, [])
        final = result(stores[1].load(record.sessionID))
        self.assertEqual((final.data, final.version), (b"200", 201))

    def test_processesLoseNoUpdate(self) -> None:
        """
        Processes incrementing one counter in a shared directory, retrying on
        conflicts, lose no increment: the lock file excludes processes.
        """
        store = self.store()
        record = result(store.create(b"0"))
        script = textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {CHECKOUT!r})
            from twisted.internet.task import Clock
            from tests.unit.test_filestore import addOne
            from tlsession.stores.files import FileSessionStore
            clock = Clock()
            clock.advance({START!r})
            store = FileSessionStore({self.directory!r}, clock, lockTimeout=10)
            store.startService()
            for _ in range(100):
                addOne(store, {record.sessionID!r})
            """
        )
        children = [
            subprocess.Popen(
                [sys.executable, "-c", script],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(4)
        ]
        for child in children:
            output, _ = child.communicate(timeout=120)
            self.assertEqual(child.returncode, 0, output.decode("utf-8", "replace"))
        final = result(store.load(record.sessionID))
        self.assertEqual((final.data, final.version), (b"400", 401))

    def test_lockHeldElsewhereFailsFast(self) -> None:
        """
        While another process holds the directory lock for longer than
        C{lockTimeout}, changes fail with L{StoreUnavailableError} and
        change nothing, and reads still work; once it lets go, changes work.
        """
        store = self.store(lockTimeout=0.05)
        record = result(store.create(b"before"))
        other = os.open(os.path.join(self.directory, LOCK_FILE), os.O_RDWR)
        self.addCleanup(os.close, other)
        fcntl.flock(other, fcntl.LOCK_EX)
        for call in [
            lambda: store.create(),
            lambda: store.save(record.sessionID, 1, b"x"),
            lambda: store.touch(record.sessionID),
            lambda: store.rotate(record.sessionID),
            lambda: store.delete(record.sessionID),
            lambda: store.sweep(),
        ]:
            with self.assertRaises(StoreUnavailableError):
                result(call())
        self.assertEqual(result(store.load(record.sessionID)), record)
        fcntl.flock(other, fcntl.LOCK_UN)
        self.assertEqual(result(store.save(record.sessionID, 1, b"after")), 2)

    def corrupt(
        self, damage: Any
    ) -> Tuple[FileSessionStore, str, List[Dict[str, Any]]]:
        store = self.store()
        events: List[Dict[str, Any]] = []
        store.log = Logger(observer=events.append)
        record = result(store.create(b"session data"))
        path = os.path.join(self.directory, record.sessionID)
        damage(path)
        return store, record.sessionID, events

    def test_corruptFilesAreGone(self) -> None:
        """
        A file no store wrote whole (cut short, another format, a damaged
        byte, empty) loads as no session, is logged and removed.
        """

        def rewrite(change: Any) -> Any:
            def damage(path: str) -> None:
                with open(path, "rb") as file:
                    contents = file.read()
                with open(path, "wb") as file:
                    file.write(change(contents))

            return damage

        for name, change in [
            ("cut short", lambda contents: contents[:-3]),
            ("header only", lambda contents: contents[:20]),
            ("empty", lambda contents: b""),
            ("other format", lambda contents: b"{}" + contents[2:]),
            ("damaged byte", lambda contents: contents[:-1] + b"!"),
            (
                "damaged version",
                lambda contents: contents[:15] + b"\x09" + contents[16:],
            ),
        ]:
            store, sessionID, events = self.corrupt(rewrite(change))
            self.assertIsNone(result(store.load(sessionID)), name)
            self.assertEqual(len(events), 1, name)
            self.assertIn("corrupt session file", events[0]["log_format"])
            self.assertEqual(sessionFiles(self.directory), [], name)

    def test_corruptFileSaveIsGone(self) -> None:
        """
        Saving to a corrupt file fails with L{SessionGoneError} and removes
        it.
        """
        store, sessionID, events = self.corrupt(lambda path: open(path, "wb").close())
        with self.assertRaises(SessionGoneError):
            result(store.save(sessionID, 1, b"new"))
        self.assertEqual(sessionFiles(self.directory), [])
        self.assertEqual(len(events), 1)

    def test_strangeFilesAreNotFollowed(self) -> None:
        """
        A symbolic link, a FIFO or a directory under a session's name is
        treated as no session: the link's target is neither read nor
        touched, the FIFO does not block, and nothing crashes.
        """
        target = os.path.join(os.path.dirname(self.directory), "target")
        with open(target, "wb") as file:
            file.write(b"outside")

        def link(path: str) -> None:
            os.unlink(path)
            os.symlink(target, path)

        def fifo(path: str) -> None:
            os.unlink(path)
            os.mkfifo(path, 0o600)

        def directory(path: str) -> None:
            os.unlink(path)
            os.mkdir(path)

        for damage in [link, fifo, directory]:
            store, sessionID, events = self.corrupt(damage)
            self.assertIsNone(result(store.load(sessionID)), damage.__name__)
            with self.assertRaises(SessionGoneError):
                result(store.touch(sessionID))
            self.assertTrue(events, damage.__name__)
            if os.path.isdir(os.path.join(self.directory, sessionID)):
                os.rmdir(os.path.join(self.directory, sessionID))
        with open(target, "rb") as file:
            self.assertEqual(file.read(), b"outside")

    def test_missingDirectory(self) -> None:
        """
        When the directory disappears under the store, changes fail with
        L{StoreUnavailableError} and loads find no session.
        """
        store = self.store()
        record = result(store.create())
        shutil.rmtree(self.directory)
        with self.assertRaises(StoreUnavailableError):
            result(store.create())
        with self.assertRaises(StoreUnavailableError):
            result(store.save(record.sessionID, 1, b""))
        self.assertIsNone(result(store.load(record.sessionID)))

    def test_sweepRemovesExpiredFilesInBatches(self) -> None:
        """
        A sweep looks at no more entries than it is asked to, carries on
        where the last one stopped, and removes expired sessions and stale
        temporary files but no live session and not the lock file.
        """
        store = self.store(idleTimeout=60)
        expired = [result(store.create(idleTimeout=10)) for _ in range(5)]
        live = result(store.create(b"live"))
        stale = os.path.join(self.directory, ".tmp-crashed")
        with open(stale, "wb") as file:
            file.write(b"half a session")
        self.clock.advance(30)
        entries = len(os.listdir(self.directory))
        self.assertEqual(entries, 8)
        counts = [result(store.sweep(3)) for _ in range(3)]
        self.assertLessEqual(max(counts), 3)
        self.assertEqual(sum(counts), len(expired))
        self.assertEqual(sessionFiles(self.directory), [live.sessionID])
        self.assertTrue(os.path.exists(os.path.join(self.directory, LOCK_FILE)))
        self.assertEqual(result(store.sweep(100)), 0)

    def test_sweepService(self) -> None:
        """
        L{SessionSweepService} sweeps the file store on its clock.
        """
        store = self.store()
        for _ in range(3):
            result(store.create(idleTimeout=5))
        live = result(store.create())
        service = SessionSweepService(store, self.clock, interval=20, batchSize=50)
        service.startService()
        self.clock.advance(20)
        self.assertEqual(sessionFiles(self.directory), [live.sessionID])
        self.assertEqual(service.removed, 3)
        service.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_durable(self) -> None:
        """
        With C{durable}, sessions are written and read back the same (each
        write is flushed to disk).
        """
        store = self.store(durable=True)
        record = result(store.create(b"kept"))
        self.assertEqual(result(store.save(record.sessionID, 1, b"still kept")), 2)
        rotated = result(store.rotate(record.sessionID))
        self.assertEqual(result(store.load(rotated.sessionID)).data, b"still kept")
        self.assertEqual(sessionFiles(self.directory), [rotated.sessionID])

    def test_badArguments(self) -> None:
        """
        Nonsense limits are refused when the store is built; nonsense
        arguments to its methods come back as failed L{Deferred}s, never
        raised, all L{InvalidArgumentError}s (also L{TypeError}s and
        L{ValueError}s), or L{ValueTooLargeError} for data over the limit.
        """
        for kw in [
            {"idleTimeout": 0},
            {"absoluteTimeout": -1},
            {"maxValueBytes": 1.5},
            {"lockTimeout": 0},
        ]:
            with self.assertRaises(InvalidArgumentError):
                FileSessionStore(self.directory, self.clock, **kw)
        store = self.store(maxValueBytes=10)
        record = result(store.create())
        sessionID = record.sessionID
        for call in [
            lambda: store.create("text"),  # type: ignore[arg-type]
            lambda: store.create(bytearray(b"x")),  # type: ignore[arg-type]
            lambda: store.create(b"", idleTimeout=-5),
            lambda: store.create(b"", idleTimeout=True),
            lambda: store.save(sessionID, 1, "text"),  # type: ignore[arg-type]
            lambda: store.save(sessionID, 1, b"", idleTimeout=float("nan")),
            lambda: store.save(sessionID, 0, b""),
            lambda: store.save(sessionID, 2**64, b""),
            lambda: store.save(sessionID, "1", b""),  # type: ignore[arg-type]
        ]:
            failure = self.failureResultOf(call(), InvalidArgumentError)
            self.assertIsInstance(failure.value, (TypeError, ValueError))
        self.failureResultOf(store.create(b"x" * 11), ValueTooLargeError)
        self.failureResultOf(store.save(sessionID, 1, b"x" * 11), ValueTooLargeError)
        self.assertEqual(result(store.load(sessionID)), record)


class FileStoreLifecycleTests(SynchronousTestCase):
    """
    The file store is a service: building it touches no file, starting it
    makes the directory, and calls outside a run fail as unavailable.
    """

    def setUp(self) -> None:
        self.directory = os.path.join(temporaryDirectory(self), "sessions")
        self.clock = Clock()
        self.clock.advance(START)

    def assertUnavailable(self, store: FileSessionStore, reason: str) -> None:
        sessionID = newSessionID()
        for call in [
            lambda: store.create(),
            lambda: store.load(sessionID),
            lambda: store.load("malformed"),
            lambda: store.save(sessionID, 1, b""),
            lambda: store.touch(sessionID),
            lambda: store.rotate(sessionID),
            lambda: store.delete(sessionID),
            lambda: store.delete("malformed"),
            lambda: store.sweep(),
        ]:
            failure = self.failureResultOf(call(), StoreUnavailableError)
            self.assertEqual(str(failure.value), f"the file session store is {reason}")

    def test_buildingTouchesNothing(self) -> None:
        """
        Building a store creates no directory; calls fail, saying it is not
        started, and create nothing either.
        """
        store = FileSessionStore(self.directory, self.clock)
        self.assertUnavailable(store, "not started")
        self.assertFalse(os.path.exists(self.directory))

    def test_startAndStop(self) -> None:
        """
        Starting creates the private directory; once stopped (its
        L{Deferred} has fired) calls fail, saying so, and the sessions stay
        on disk for the next start.
        """
        store = FileSessionStore(self.directory, self.clock)
        store.startService()
        self.assertEqual(stat.S_IMODE(os.stat(self.directory).st_mode), 0o700)
        record = result(store.create(b"kept"))
        self.successResultOf(store.stopService())
        self.assertUnavailable(store, "stopped")
        self.assertEqual(sessionFiles(self.directory), [record.sessionID])
        store.startService()
        self.addCleanup(stopped, self, store)
        self.assertEqual(result(store.load(record.sessionID)), record)

    def test_stopReleasesTheSweepScan(self) -> None:
        """
        A sweep that stopped halfway through the directory keeps it open
        for the next one; stopping the store closes it.
        """
        store = FileSessionStore(self.directory, self.clock)
        store.startService()
        for _ in range(5):
            result(store.create())
        before = openDescriptors()
        self.assertEqual(result(store.sweep(2)), 0)
        self.assertEqual(len(openDescriptors() - before), 1)
        self.successResultOf(store.stopService())
        self.assertEqual(openDescriptors(), before)


def openDescriptors() -> set[str]:
    """
    The file descriptors this process has open.
    """
    return set(os.listdir("/proc/self/fd"))


def addOne(store: FileSessionStore, sessionID: str) -> SessionRecord:
    """
    Add one to the counter in session C{sessionID}, retrying on conflicts
    (at most 10000 times) as the session manager does.
    """
    for _ in range(10000):
        record = result(store.load(sessionID))
        try:
            result(
                store.save(sessionID, record.version, b"%d" % (int(record.data) + 1))
            )
        except ConflictError:
            continue
        return record
    raise AssertionError("no save got through in 10000 attempts")
