# -*- test-case-name: tests.integration.test_sql_store -*-
"""
A throwaway PostgreSQL server for the integration tests: C{initdb} into a
temporary directory, listening on a unix socket in it and on a free port of
127.0.0.1, stopped (C{pg_ctl stop -m immediate}) and removed afterwards.

PostgreSQL refuses to run as root; as root the server runs as the
C{postgres} user (C{runuser}), in a directory handed over to it.
"""

from __future__ import annotations

import glob
import importlib
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
from typing import Any, Dict, List, NoReturn, Optional

from twisted.trial.unittest import SkipTest

from tests.integration._support import LOOPBACK, freePort
from tests.peers import requirePeer

#: The superuser the tests' cluster is made with (trust authentication).
USER = "tlsession"

_TIMEOUT = 60.0


def _missing(reason: str) -> NoReturn:
    """
    Skip for C{reason}, or fail under CI, like L{tests.peers.requirePeer}.
    """
    if os.environ.get("CI", "").lower() == "true":
        raise AssertionError(f"CI must provide every peer: {reason}")
    raise SkipTest(reason)


def requireDriver() -> Any:
    """
    Import and return the PostgreSQL driver the store uses, psycopg 3, or
    skip (fail under CI).
    """
    try:
        importlib.import_module("psycopg.errors")
        return importlib.import_module("psycopg")
    except ImportError as error:
        _missing(f"psycopg cannot be imported ({error}): pip install -e '.[test]'")


def findBinaries() -> str:
    """
    The directory holding C{initdb}, C{pg_ctl} and C{postgres}: Debian keeps
    them in C{/usr/lib/postgresql/<version>/bin} (the newest is taken), off
    C{PATH}; elsewhere they are on it.
    """
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:

        def version(path: str) -> List[int]:
            return [int(part) for part in re.findall(r"\d+", path)]

        return os.path.dirname(max(found, key=version))
    return os.path.dirname(requirePeer("initdb"))


class PostgresServer:
    """
    One running PostgreSQL server made for the tests.

    @ivar socketDirectory: where its unix socket is (libpq's C{host}).
    @ivar port: its TCP port on 127.0.0.1 (also names the unix socket).
    """

    def __init__(self) -> None:
        self.driver = requireDriver()
        self.binaries = findBinaries()
        self._asPostgres: List[str] = []
        owner: Optional[pwd.struct_passwd] = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                _missing("PostgreSQL needs the postgres user to run as root")
            self._asPostgres = [requirePeer("runuser"), "-u", "postgres", "--"]
        self.directory = tempfile.mkdtemp(prefix="tlpg-")
        if owner is not None:
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
        self.socketDirectory = self.directory
        self.dataDirectory = os.path.join(self.directory, "data")
        self.logPath = os.path.join(self.directory, "postgres.log")
        self.port = freePort()
        self.running = False

    def _run(self, program: str, *arguments: str, timeout: float = _TIMEOUT) -> str:
        argv = [*self._asPostgres, os.path.join(self.binaries, program), *arguments]
        try:
            result = subprocess.run(
                argv,
                cwd=self.directory,
                env={**os.environ, "LC_ALL": "C", "LANG": "C"},
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as expired:
            raise AssertionError(
                f"{program} did not finish in {timeout}s\n{self.log()}"
            ) from expired
        if result.returncode != 0:
            raise AssertionError(
                f"{' '.join(argv)} failed with {result.returncode}\n"
                f"{result.stdout}{result.stderr}\n{self.log()}"
            )
        return result.stdout

    def log(self) -> str:
        """
        The server's log so far, for failure messages.
        """
        try:
            with open(self.logPath, errors="replace") as log:
                return "--- postgres.log\n" + log.read()[-8000:]
        except OSError:
            return "(no server log)"

    def initialize(self) -> None:
        """
        Make the cluster: one trusted superuser, C{USER}, no fsync.
        """
        self._run(
            "initdb",
            "--pgdata",
            self.dataDirectory,
            "--username",
            USER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
        )

    def start(self) -> None:
        """
        Start the server and wait (at most a minute) until it accepts
        connections.
        """
        options = " ".join(
            [
                f"-k {self.socketDirectory}",
                f"-p {self.port}",
                f"-c listen_addresses={LOOPBACK}",
                # Throwaway data: flushing it to disk only slows the tests
                # down. Commits still reach the kernel before they return
                # (synchronous_commit stays on), so they survive the
                # immediate stop that the restart test uses as a crash.
                "-c fsync=off",
                "-c full_page_writes=off",
                "-c max_connections=50",
                "-c shared_buffers=16MB",
            ]
        )
        self.running = True
        self._run(
            "pg_ctl",
            "--pgdata",
            self.dataDirectory,
            "--log",
            self.logPath,
            "--options",
            options,
            "--wait",
            "--timeout",
            str(int(_TIMEOUT)),
            "start",
        )
        self._waitForConnections()

    def _waitForConnections(self) -> None:
        deadline = time.monotonic() + _TIMEOUT
        while True:
            try:
                self.driver.connect(**self.connectionArguments("postgres")).close()
                return
            except self.driver.OperationalError:
                if time.monotonic() > deadline:
                    raise AssertionError(
                        f"PostgreSQL never accepted connections\n{self.log()}"
                    ) from None
                time.sleep(0.05)

    def stop(self) -> None:
        """
        Stop the server at once (as a crash would: the data survives).
        """
        if not self.running:
            return
        self.running = False
        try:
            self._run(
                "pg_ctl",
                "--pgdata",
                self.dataDirectory,
                "--mode",
                "immediate",
                "--wait",
                "--timeout",
                "30",
                "stop",
            )
        except AssertionError:
            self._kill()
            raise

    def _kill(self) -> None:
        try:
            with open(os.path.join(self.dataDirectory, "postmaster.pid")) as pidFile:
                pid = int(pidFile.readline())
            os.kill(pid, 9)
        except (OSError, ValueError):
            pass

    def remove(self) -> None:
        """
        Stop the server if it runs, and remove its directory.
        """
        try:
            self.stop()
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def connectionArguments(self, database: str, tcp: bool = False) -> Dict[str, Any]:
        """
        libpq connection parameters (C{psycopg.connect} keyword arguments)
        for C{database}, over the unix socket or, with C{tcp}, over loopback
        TCP.
        """
        return {
            "host": LOOPBACK if tcp else self.socketDirectory,
            "port": self.port,
            "user": USER,
            "dbname": database,
        }

    def createDatabase(self, name: str) -> None:
        """
        Create an empty database called C{name}.
        """
        self._admin(f'CREATE DATABASE "{name}"')

    def dropDatabase(self, name: str) -> None:
        """
        Drop the database C{name}, closing any connection left to it.
        """
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def query(self, database: str, sql: str, *parameters: Any) -> List[Any]:
        """
        Run one statement in C{database} on a connection of its own and
        return the rows it produced (none for statements without rows).
        """
        connection = self.driver.connect(**self.connectionArguments(database))
        try:
            with connection:
                with connection.cursor() as cursor:
                    cursor.execute(sql, parameters)
                    return list(cursor.fetchall()) if cursor.description else []
        finally:
            connection.close()

    def _admin(self, sql: str) -> None:
        connection = self.driver.connect(**self.connectionArguments("postgres"))
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()


def startPostgres() -> PostgresServer:
    """
    A fresh, running server; the caller must call
    L{PostgresServer.remove} (also when this raises, nothing is left
    behind).
    """
    server = PostgresServer()
    try:
        server.initialize()
        server.start()
    except BaseException:
        server.remove()
        raise
    return server
