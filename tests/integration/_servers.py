# -*- test-case-name: tests.integration.test_redis_store -*-
"""
Real redis-server and memcached processes for the session store tests: each
started by the test on a unix socket (or a free 127.0.0.1 port) in a fresh
temporary directory, waited for with a bound, and killed when the test ends.
"""

from __future__ import annotations

import os
import signal
import time
from typing import List, Optional, Sequence, Tuple

from twisted.trial.unittest import TestCase

from tests.integration._support import (
    LOOPBACK,
    Address,
    PeerProcess,
    freePort,
    startPeer,
    temporaryDirectory,
)
from tests.peers import requirePeer

#: Seconds a server may take to accept connections.
START_TIMEOUT = 10.0


def _stopped(pid: int) -> bool:
    """
    Whether every thread of process C{pid} is stopped (Linux C{/proc}).
    """
    tasks = f"/proc/{pid}/task"
    try:
        threads = os.listdir(tasks)
        for thread in threads:
            with open(f"{tasks}/{thread}/stat") as stat:
                # The state follows the parenthesised command name.
                if stat.read().rpartition(")")[2].split()[0] not in ("T", "t"):
                    return False
    except FileNotFoundError:
        return True
    return True


class LoopbackServer:
    """
    A server program the test started, listening on a unix socket or a
    loopback port; L{kill}, L{pause} and L{start} again simulate outages.

    @ivar argv: the command line that runs it in the foreground.
    @ivar socketPath: its unix socket, or C{None} when it listens on TCP.
    @ivar port: its TCP port, or C{None} on a unix socket.
    @ivar process: the running program, or C{None} before L{start}.
    """

    def __init__(
        self,
        testCase: TestCase,
        name: str,
        directory: str,
        argv: List[str],
        socketPath: Optional[str],
        port: Optional[int],
    ) -> None:
        self.testCase = testCase
        self.name = name
        self.directory = directory
        self.argv = argv
        self.socketPath = socketPath
        self.port = port
        self.process: Optional[PeerProcess] = None
        self._starts = 0

    @property
    def address(self) -> Address:
        """
        Where it listens: a unix socket path or C{(host, port)}.
        """
        if self.socketPath is not None:
            return self.socketPath
        assert self.port is not None
        return (LOOPBACK, self.port)

    def endpoint(self, timeout: float = 2.0) -> str:
        """
        A client endpoint string for it, with a connect timeout.
        """
        if self.socketPath is not None:
            return f"unix:path={self.socketPath}:timeout={timeout:g}"
        return f"tcp:host={LOOPBACK}:port={self.port}:timeout={timeout:g}"

    async def start(self, timeout: float = START_TIMEOUT) -> None:
        """
        Run the server (again, after L{kill}) and wait until it accepts
        connections.
        """
        if self.socketPath is not None and os.path.exists(self.socketPath):
            # A killed server leaves its socket file behind.
            os.unlink(self.socketPath)
        self._starts += 1
        self.process = startPeer(
            self.testCase,
            self.name,
            self.argv,
            os.path.join(self.directory, f"{self.name}.{self._starts}.log"),
        )
        await self.process.listening(self.address, timeout)

    def kill(self) -> None:
        """
        SIGKILL the server: its connections drop with no goodbye.
        """
        if self.process is not None:
            self.process.kill()

    def pause(self) -> None:
        """
        SIGSTOP the server and wait until every thread of it has stopped:
        connections stay open, nothing answers.
        """
        assert self.process is not None
        self.process.signal(signal.SIGSTOP)
        self.testCase.addCleanup(self.resume)
        # The signal is delivered asynchronously: a thread of the server may
        # still answer a request sent right after kill() returned.
        deadline = time.monotonic() + START_TIMEOUT
        while not _stopped(self.process.pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} did not stop on SIGSTOP")
            time.sleep(0.005)

    def resume(self) -> None:
        """
        SIGCONT a paused server.
        """
        if self.process is not None:
            self.process.signal(signal.SIGCONT)


def _place(
    testCase: TestCase, name: str, unixSocket: bool
) -> Tuple[str, Optional[str], Optional[int]]:
    """
    A fresh directory, and a socket path in it or a free port.
    """
    directory = temporaryDirectory(testCase)
    if unixSocket:
        return directory, os.path.join(directory, f"{name}.sock"), None
    return directory, None, freePort()


async def startRedis(
    testCase: TestCase, unixSocket: bool = True, extraArguments: Sequence[str] = ()
) -> LoopbackServer:
    """
    Start a redis-server that keeps nothing on disk, killed when the test
    ends.

    @param unixSocket: listen on a unix socket (else on a free loopback port).
    @param extraArguments: more command-line options (C{--requirepass x}).
    """
    directory, socketPath, port = _place(testCase, "redis", unixSocket)
    argv = [
        requirePeer("redis-server"),
        "--port",
        str(port or 0),
        "--bind",
        LOOPBACK,
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--dir",
        directory,
        "--loglevel",
        "warning",
    ]
    if socketPath is not None:
        argv += ["--unixsocket", socketPath, "--unixsocketperm", "700"]
    server = LoopbackServer(
        testCase,
        "redis-server",
        directory,
        argv + list(extraArguments),
        socketPath,
        port,
    )
    await server.start()
    return server


async def startMemcached(testCase: TestCase, unixSocket: bool = True) -> LoopbackServer:
    """
    Start a memcached with a small memory limit, killed when the test ends.

    @param unixSocket: listen on a unix socket (else on a free loopback port).
    """
    directory, socketPath, port = _place(testCase, "memcached", unixSocket)
    argv = [requirePeer("memcached"), "-m", "16", "-c", "256"]
    if os.geteuid() == 0:
        # memcached refuses to run as root unless told which user to be.
        argv += ["-u", "root"]
    if socketPath is not None:
        argv += ["-s", socketPath, "-a", "0700"]
    else:
        argv += ["-l", LOOPBACK, "-p", str(port), "-U", "0"]
    server = LoopbackServer(testCase, "memcached", directory, argv, socketPath, port)
    await server.start()
    return server
