"""
Benchmark the session stores from one Twisted client: load+save round trips
against each store, one at a time (latency) and many in flight (throughput),
and the PB store's near-cache hits, beside raw GET/SET through txredisapi
and through Twisted's memcache client, and print the ratios.

Run C{python bench/sessions.py --help} for the options; bench/README.md says
what each figure means.

The script runs in two roles. Without C{--client} it is the harness: it
starts the servers (redis-server, memcached, PostgreSQL, the tlsession
daemon) and, for each store, a client process under the interpreter given
by C{--python}; it collects their figures and prints the tables. With
C{--client SPEC} it is that client: one reactor, one store, the phases the
spec asks for, the figures written to a JSON file.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pwd
import re
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from _harness import (
    LOOPBACK,
    BenchError,
    ForeignLoad,
    ProcessSet,
    findProgram,
    freePort,
    loadAverage,
    machineDescription,
    programVersion,
    pythonDescription,
    runScript,
    targetLines,
    waitForPort,
)
from balancer import twistdArgv
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.task import deferLater

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What the issue asks of the PB store, as ratios to raw txredisapi.
PB_THROUGHPUT_TARGET = 1.0
NEAR_CACHE_TARGET = 50.0
# Share of the machine other processes may use before a table is flagged.
NOISY = 0.10
# A loop answered synchronously (memory, files, near-cache hits) hands the
# reactor back after this many load+save pairs, so timers still run.
SYNC_BUDGET = 256
# Latency samples kept per operation kind; beyond, the rest are not kept.
MAX_SAMPLES = 2_000_000
# The PostgreSQL superuser of the throwaway cluster (trust authentication).
PG_USER = "tlsession"
SECRET = "bench-sessions-secret-0123456789"


# Stores, in the order they run and are printed.

STORES: Dict[str, str] = {
    "redis-raw": "GET/SET through txredisapi, no session store (the issue's "
    "'Redis via txredisapi')",
    "redis": "RedisSessionStore (one EVALSHA each: a packed load, a compare-and-swap "
    "save)",
    "memcached-raw": "get/set through twisted.protocols.memcache, no session store",
    "memcached": "MemcacheSessionStore (gets load, cas save)",
    "pb-nocache": "PBSessionStore, near cache off: every op a round trip to the daemon",
    "pb": "PBSessionStore, near cache on (the default): loads after this "
    "process's own save are hits",
    "memory": "MemorySessionStore, in the client process",
    "sqlite": "SQLSessionStore.sqlite, WAL, one adbapi thread in the client",
    "postgresql": "SQLSessionStore.postgresql, adbapi pool of 5 threads",
    "files": "FileSessionStore, synchronous file I/O in the reactor thread",
}

# The server each store talks to, if any.
SERVER_OF = {
    "redis-raw": "redis",
    "redis": "redis",
    "memcached-raw": "memcached",
    "memcached": "memcached",
    "pb-nocache": "daemon",
    "pb": "daemon",
    "postgresql": "postgresql",
}

# What the client interpreter must be able to import for each store.
IMPORTS = {
    "redis-raw": "txredisapi",
    "redis": "txredisapi",
    "postgresql": "psycopg",
}


# ---------------------------------------------------------------------------
# The client role: runs under --python, one store per process.
# ---------------------------------------------------------------------------


def serverCpuSeconds(groups: Sequence[int]) -> float:
    """
    User plus system CPU time used so far by every process in the given
    process groups and by their descendants, living or reaped (PostgreSQL's
    backends put themselves in sessions of their own).
    """
    ticks = os.sysconf("SC_CLK_TCK")
    wanted = set(groups)
    parents: Dict[int, int] = {}
    cpu: Dict[int, float] = {}
    included = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces or parentheses: split after it.
        fields = stat[stat.rindex(")") + 2 :].split()
        pid = int(entry)
        parents[pid] = int(fields[1])
        # utime and stime, plus cutime and cstime: the children it has
        # reaped (backends of a closed connection) still count.
        cpu[pid] = sum(int(v) for v in fields[11:15]) / ticks
        if int(fields[2]) in wanted:
            included.add(pid)
    children: Dict[int, List[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    pending = list(included)
    while pending:
        for child in children.get(pending.pop(), []):
            if child not in included:
                included.add(child)
                pending.append(child)
    return sum(cpu[pid] for pid in included)


def percentiles(samples: List[float]) -> Optional[Dict[str, float]]:
    """
    The mean, median and 99th percentile of latencies in seconds, as
    microseconds; C{None} without samples.
    """
    if not samples:
        return None
    ordered = sorted(samples)
    count = len(ordered)
    return {
        "n": count,
        "mean": sum(ordered) / count * 1e6,
        "p50": ordered[(count - 1) // 2] * 1e6,
        "p99": ordered[min(count - 1, int(count * 0.99))] * 1e6,
    }


class StoreOps:
    """
    Load and save through an L{ISessionStore}: a load gives the record's
    version, a save is a compare-and-swap on it.
    """

    def __init__(self, store: Any, data: Tuple[bytes, bytes]) -> None:
        self.store = store
        self.data = data

    async def prepare(self, count: int) -> List[Any]:
        """
        Create C{count} sessions; return their identifiers.
        """
        keys = []
        for _ in range(count):
            record = await self.store.create(self.data[0])
            keys.append(record.sessionID)
        return keys

    def load(self, key: Any) -> Any:
        """
        Load the session; the L{Deferred} fires with its version.
        """
        return self.store.load(key).addCallback(self._version)

    @staticmethod
    def _version(record: Any) -> int:
        if record is None:
            raise LookupError("the session was not found")
        return int(record.version)

    def save(self, key: Any, version: int) -> Any:
        """
        Save new data over C{version}.
        """
        return self.store.save(key, version, self.data[version & 1])


class RawRedisOps:
    """
    GET and SET through a txredisapi connection pool.
    """

    def __init__(self, handler: Any, data: Tuple[bytes, bytes]) -> None:
        self.handler = handler
        self.data = data

    async def prepare(self, count: int) -> List[Any]:
        """
        Set C{count} keys.
        """
        keys = [b"bench:%d" % i for i in range(count)]
        for key in keys:
            await self.handler.set(key, self.data[0])
        return keys

    def load(self, key: Any) -> Any:
        """
        GET the key.
        """
        return self.handler.get(key).addCallback(_present)

    def save(self, key: Any, token: int) -> Any:
        """
        SET the key.
        """
        return self.handler.set(key, self.data[token & 1])


def _present(value: Any) -> int:
    if value is None:
        raise LookupError("the key was not found")
    return 0


class RawMemcacheOps:
    """
    get and set through one L{twisted.protocols.memcache.MemCacheProtocol}.
    """

    def __init__(self, protocol: Any, data: Tuple[bytes, bytes]) -> None:
        self.protocol = protocol
        self.data = data

    async def prepare(self, count: int) -> List[Any]:
        """
        Set C{count} keys.
        """
        keys = [b"bench:%d" % i for i in range(count)]
        for key in keys:
            await self.protocol.set(key, self.data[0])
        return keys

    def load(self, key: Any) -> Any:
        """
        get the key.
        """
        return self.protocol.get(key).addCallback(lambda r: _present(r[1]))

    def save(self, key: Any, token: int) -> Any:
        """
        set the key.
        """
        return self.protocol.set(key, self.data[token & 1])


class PhaseState:
    """
    What the loops of one phase share: the counts, the latencies and the
    signal to stop.
    """

    def __init__(self, reactor: Any, loops: int, latencies: bool) -> None:
        self.reactor = reactor
        self.running = loops
        self.stopping = False
        self.ops = 0
        self.errors = 0
        self.errorSamples: List[str] = []
        self.latencies = latencies
        self.loadTimes: List[float] = []
        self.saveTimes: List[float] = []
        self.drained: Any = Deferred()

    def failed(self, message: str) -> None:
        """
        Count a failed operation, keeping the first few messages.
        """
        self.errors += 1
        if len(self.errorSamples) < 5:
            self.errorSamples.append(message)

    def finished(self) -> None:
        """
        One loop has stopped.
        """
        self.running -= 1
        if self.running == 0:
            self.drained.callback(None)


class LoadSaveLoop:
    """
    Load a session, save it, again, until the phase stops.

    A store that answers synchronously (an already-fired L{Deferred}) would
    otherwise nest every pair in the previous one's stack; the loop then
    iterates in L{_run} instead, and hands the reactor back every
    L{SYNC_BUDGET} pairs.
    """

    def __init__(self, state: PhaseState, ops: Any, key: Any) -> None:
        self.state = state
        self.ops = ops
        self.key = key
        self._started = 0.0
        self._inRun = False
        self._again = False

    def start(self) -> None:
        """
        Begin the first pair.
        """
        self._run()

    def _run(self) -> None:
        budget = SYNC_BUDGET
        while True:
            self._inRun = True
            self._again = False
            self._pair()
            self._inRun = False
            if not self._again:
                return
            budget -= 1
            if not budget:
                self.state.reactor.callLater(0, self._run)
                return

    def _pair(self) -> None:
        self._started = time.perf_counter()
        self.ops.load(self.key).addCallback(self._loaded).addErrback(self._failed)

    def _loaded(self, token: int) -> None:
        now = time.perf_counter()
        state = self.state
        state.ops += 1
        if state.latencies and len(state.loadTimes) < MAX_SAMPLES:
            state.loadTimes.append(now - self._started)
        self._started = now
        self.ops.save(self.key, token).addCallback(self._saved).addErrback(self._failed)

    def _saved(self, result: object) -> None:
        now = time.perf_counter()
        state = self.state
        state.ops += 1
        if state.latencies and len(state.saveTimes) < MAX_SAMPLES:
            state.saveTimes.append(now - self._started)
        self._next()

    def _failed(self, reason: Any) -> None:
        self.state.failed(f"{reason.type.__name__}: {reason.getErrorMessage()}")
        self._next()

    def _next(self) -> None:
        if self.state.stopping:
            self.state.finished()
        elif self._inRun:
            self._again = True
        else:
            self._run()


async def sliced(
    reactor: Any,
    seconds: float,
    slices: int,
    count: Callable[[], int],
    serverGroups: Sequence[int],
    stop: Callable[[], None],
) -> Dict[str, Any]:
    """
    Let a phase run for C{seconds}, reading C{count()} at the end of each of
    C{slices} equal slices, then call C{stop}.

    @return: the operations counted, the seconds they took, the rate of
        each slice, and the client's and the servers' CPU seconds.
    """
    cpu0 = time.process_time()
    server0 = serverCpuSeconds(serverGroups) if serverGroups else None
    start = time.perf_counter()
    ops0 = count()
    last, lastOps = start, ops0
    rates = []
    for i in range(slices):
        end = start + seconds * (i + 1) / slices
        while True:
            remaining = end - time.perf_counter()
            if remaining <= 0:
                break
            await deferLater(reactor, min(remaining, 0.05), lambda: None)
        now, ops = time.perf_counter(), count()
        rates.append((ops - lastOps) / (now - last) if now > last else 0.0)
        last, lastOps = now, ops
    stop()
    clientCpu = time.process_time() - cpu0
    serverCpu = (
        serverCpuSeconds(serverGroups) - server0 if server0 is not None else None
    )
    return {
        "ops": lastOps - ops0,
        "seconds": last - start,
        "opsPerSecond": (lastOps - ops0) / (last - start),
        "sliceRates": rates,
        "clientCpu": clientCpu,
        "serverCpu": serverCpu,
    }


async def loadSavePhase(
    reactor: Any,
    ops: Any,
    keys: Sequence[Any],
    seconds: float,
    slices: int,
    serverGroups: Sequence[int],
    latencies: bool,
    drainTimeout: float,
) -> Dict[str, Any]:
    """
    Run one L{LoadSaveLoop} per key for C{seconds}; the loops then finish
    the pair they are in.
    """
    state = PhaseState(reactor, len(keys), latencies)
    for key in keys:
        LoadSaveLoop(state, ops, key).start()

    def stop() -> None:
        state.stopping = True

    result = await sliced(
        reactor, seconds, slices, lambda: state.ops, serverGroups, stop
    )
    try:
        await state.drained.addTimeout(drainTimeout, reactor)
    except DeferredTimeout:
        state.failed(f"{state.running} loops still waiting {drainTimeout} s after")
    result["errors"] = state.errors
    result["errorSamples"] = state.errorSamples
    if latencies:
        result["load"] = percentiles(state.loadTimes)
        result["save"] = percentiles(state.saveTimes)
    return result


async def nearCachePhase(
    reactor: Any,
    store: Any,
    keys: Sequence[Any],
    seconds: float,
    slices: int,
) -> Dict[str, Any]:
    """
    Load the (warm) sessions C{keys} over and over, as fast as one caller
    can, and count how many the near cache answered.
    """
    counters = store.counters
    hits0, misses0 = counters["nearCacheHits"], counters["nearCacheMisses"]
    state = {"issued": 0, "answered": 0, "empty": 0, "stopping": False}

    def sink(record: Any) -> None:
        state["answered"] += 1
        if record is None:
            state["empty"] += 1

    def chunk() -> None:
        if state["stopping"]:
            return
        load = store.load
        for _ in range(16):
            for key in keys:
                load(key).addCallback(sink)
        state["issued"] += 16 * len(keys)
        reactor.callLater(0, chunk)

    def stop() -> None:
        state["stopping"] = True

    chunk()
    result = await sliced(reactor, seconds, slices, lambda: state["answered"], (), stop)
    hits = counters["nearCacheHits"] - hits0
    misses = counters["nearCacheMisses"] - misses0
    result["hits"] = hits
    result["misses"] = misses
    result["hitRate"] = hits / (hits + misses) if hits + misses else 0.0
    result["errors"] = state["empty"]
    result["errorSamples"] = (
        [f"{state['empty']} loads found no session"] if state["empty"] else []
    )
    return result


async def waitFor(
    reactor: Any, condition: Callable[[], bool], timeout: float, what: str
) -> None:
    """
    Poll C{condition} every 20 ms until it holds.

    @raise RuntimeError: after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} after {timeout} s")
        await deferLater(reactor, 0.02, lambda: None)


async def openStore(
    reactor: Any, spec: Dict[str, Any]
) -> Tuple[Any, Any, Callable[[], Any]]:
    """
    Build and connect what C{spec["store"]} names.

    @return: the operations adapter, the store (for the near-cache phase;
        C{None} for the raw clients) and a function that closes it all.
    """
    name = spec["store"]
    size = spec["valueBytes"]
    # Two payloads of the same size, alternated, so no layer can skip a
    # write as unchanged.
    data = (b"a" * size, b"b" * size)
    endpoint: Any = spec.get("endpoint")
    # The stores are imported here, after the client installed its reactor:
    # txredisapi takes the global reactor when it is imported.
    connectTimeout = 20.0
    if name == "redis-raw":
        import txredisapi
        from twisted.internet.endpoints import clientFromString

        # The same pool RedisSessionStore.fromEndpoint builds.
        factory = txredisapi.RedisFactory(
            endpoint,
            None,
            4,
            isLazy=True,
            handler=txredisapi.ConnectionHandler,
            charset=None,
            replyTimeout=2.0,
            convertNumbers=False,
        )
        factory.startConnecting(clientFromString(reactor, endpoint))
        await waitFor(
            reactor, lambda: factory.size > 0, connectTimeout, "no Redis connection"
        )
        return RawRedisOps(factory.handler, data), None, factory.disconnect
    if name == "memcached-raw":
        from twisted.internet.endpoints import clientFromString, connectProtocol
        from twisted.protocols.memcache import MemCacheProtocol

        protocol = MemCacheProtocol(timeOut=2)
        await connectProtocol(clientFromString(reactor, endpoint), protocol)

        def closeMemcache() -> None:
            if protocol.transport is not None:
                protocol.transport.loseConnection()

        return RawMemcacheOps(protocol, data), None, closeMemcache
    if name == "redis":
        from tlsession.stores.redis import RedisSessionStore

        store: Any = RedisSessionStore.fromEndpoint(reactor, endpoint)
        store.startService()
        await store.whenConnected().addTimeout(connectTimeout, reactor)
        return StoreOps(store, data), store, store.stopService
    if name == "memcached":
        from tlsession.stores.memcache import MemcacheSessionStore

        store = MemcacheSessionStore.fromEndpoint(reactor, endpoint)
        store.startService()
        await store.whenConnected().addTimeout(connectTimeout, reactor)
        return StoreOps(store, data), store, store.stopService
    if name in ("pb", "pb-nocache"):
        from tlsession.stores.pb import PBSessionStore

        store = PBSessionStore(
            endpoint,
            spec["secret"],
            reactor,
            insecure=spec["tcp"],
            nearCacheEntries=0 if name == "pb-nocache" else 10_000,
        )
        store.startService()
        connected = store.whenConnected(failAfterFailures=5)
        await connected.addTimeout(connectTimeout, reactor)
        return StoreOps(store, data), store, store.stopService
    if name == "memory":
        from tlsession.stores.memory import MemorySessionStore

        store = MemorySessionStore(reactor)
        store.startService()
        return StoreOps(store, data), store, store.stopService
    if name == "sqlite":
        from tlsession.stores.sql import SQLSessionStore

        store = SQLSessionStore.sqlite(spec["path"], reactor, reactor=reactor)
        store.startService()
        await store.createSchema()
        return StoreOps(store, data), store, store.stopService
    if name == "postgresql":
        from tlsession.stores.sql import SQLSessionStore

        store = SQLSessionStore.postgresql(endpoint, reactor, reactor=reactor)
        store.startService()
        await store.createSchema()
        return StoreOps(store, data), store, store.stopService
    if name == "files":
        from tlsession.stores.files import FileSessionStore

        store = FileSessionStore(spec["path"], reactor)
        store.startService()
        return StoreOps(store, data), store, store.stopService
    raise ValueError(f"unknown store {name}")


async def runClient(reactor: Any, spec: Dict[str, Any]) -> Dict[str, Any]:
    """
    Open the store, create the sessions, warm up, and measure: sequential
    load+save pairs on one session, pipelined pairs on C{concurrency}
    sessions at once, and (PB with its near cache) near-cache hits.
    """
    ops, store, close = await openStore(reactor, spec)
    groups = spec["serverGroups"]
    warmup = spec["warmup"]
    seconds, slices = spec["duration"], spec["slices"]
    drain = 10.0
    result: Dict[str, Any] = {"store": spec["store"]}
    try:
        keys = await ops.prepare(spec["concurrency"])
        if warmup > 0:
            await loadSavePhase(reactor, ops, keys[:1], warmup / 2, 1, (), False, drain)
            await loadSavePhase(reactor, ops, keys, warmup / 2, 1, (), False, drain)
        counters = getattr(store, "counters", None)
        result["sequential"] = await loadSavePhase(
            reactor, ops, keys[:1], seconds, slices, groups, True, drain
        )
        hits0 = counters["nearCacheHits"] if counters is not None else 0
        result["pipelined"] = await loadSavePhase(
            reactor, ops, keys, seconds, slices, groups, False, drain
        )
        if counters is not None:
            result["pipelined"]["hits"] = counters["nearCacheHits"] - hits0
        if spec["store"] == "pb":
            if warmup > 0:
                await nearCachePhase(reactor, store, keys, warmup / 2, 1)
            result["nearCache"] = await nearCachePhase(
                reactor, store, keys, seconds, slices
            )
        if hasattr(store, "stats"):
            result["storeStats"] = store.stats()
    finally:
        await maybeDeferred(close)
    return result


def clientMain(specPath: str) -> int:
    """
    The client role: run the spec in C{specPath}, write its result.

    @return: the exit status.
    """
    with open(specPath) as f:
        spec = json.load(f)
    sys.path.insert(0, ROOT)
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import reactor

    outcome: Dict[str, Any] = {}

    def finished(result: Any) -> None:
        outcome["result"] = result

    def failed(reason: Any) -> None:
        outcome["error"] = reason.getTraceback()

    def tooLong() -> None:
        outcome["error"] = f"the client did not finish in {spec['timeLimit']} s"
        reactor.stop()

    def begin() -> None:
        d = Deferred.fromCoroutine(runClient(reactor, spec))
        d.addCallbacks(finished, failed)
        d.addBoth(lambda _: reactor.stop() if reactor.running else None)

    limit = reactor.callLater(spec["timeLimit"], tooLong)
    reactor.callWhenRunning(begin)
    reactor.run()
    if limit.active():
        limit.cancel()
    if "error" in outcome:
        print(outcome["error"], file=sys.stderr)
        return 1
    with open(spec["resultPath"] + ".tmp", "w") as f:
        json.dump(outcome["result"], f)
    os.rename(spec["resultPath"] + ".tmp", spec["resultPath"])
    return 0


# ---------------------------------------------------------------------------
# The harness role.
# ---------------------------------------------------------------------------


def waitForUnix(path: str, process: Any, timeout: float = 20.0) -> None:
    """
    Wait until something accepts connections on the unix socket C{path}.

    @raise BenchError: on timeout or when C{process} dies.
    """
    deadline = time.monotonic() + timeout
    while True:
        process.check()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(1.0)
                s.connect(path)
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(
                f"nothing listens on {path} after {timeout}s\n{process.tail()}"
            )
        time.sleep(0.02)


class Server:
    """
    A running server: how clients reach it and the process group whose CPU
    time is its cost.
    """

    def __init__(self, name: str, endpoint: Any, group: int, version: str) -> None:
        self.name = name
        self.endpoint = endpoint
        self.group = group
        self.version = version


def startRedis(processes: Any, cpus: Optional[str], tcp: bool) -> Server:
    """
    A redis-server that keeps nothing on disk, on a unix socket (or a
    loopback port with C{tcp}).
    """
    program = findProgram("redis-server")
    directory = processes.path("redis")
    os.mkdir(directory, 0o700)
    argv = [program, "--save", "", "--appendonly", "no", "--daemonize", "no"]
    argv += ["--dir", directory, "--loglevel", "warning"]
    if tcp:
        port = freePort()
        argv += ["--port", str(port), "--bind", LOOPBACK]
        endpoint = f"tcp:host={LOOPBACK}:port={port}:timeout=2"
    else:
        path = os.path.join(directory, "redis.sock")
        argv += ["--port", "0", "--unixsocket", path, "--unixsocketperm", "700"]
        endpoint = f"unix:path={path}:timeout=2"
    process = processes.start("redis", argv, cpus=cpus)
    if tcp:
        waitForPort(port, process=process)
    else:
        waitForUnix(path, process)
    version = programVersion([program, "--version"])
    match = re.search(r"v=(\S+)", version)
    return Server(
        "redis",
        endpoint,
        process.pid,
        f"redis-server {match.group(1) if match else version}",
    )


def startMemcached(processes: Any, cpus: Optional[str], tcp: bool) -> Server:
    """
    A memcached with 64 MB of memory, on a unix socket (or a loopback port).
    """
    program = findProgram("memcached")
    argv = [program, "-m", "64", "-c", "1024"]
    if os.geteuid() == 0:
        # memcached refuses to run as root unless told which user to be.
        argv += ["-u", "root"]
    if tcp:
        port = freePort()
        argv += ["-l", LOOPBACK, "-p", str(port), "-U", "0"]
        endpoint = f"tcp:host={LOOPBACK}:port={port}:timeout=2"
    else:
        path = processes.path("memcached.sock")
        argv += ["-s", path, "-a", "0700"]
        endpoint = f"unix:path={path}:timeout=2"
    process = processes.start("memcached", argv, cpus=cpus)
    if tcp:
        waitForPort(port, process=process)
    else:
        waitForUnix(path, process)
    return Server("memcached", endpoint, process.pid, programVersion([program, "-V"]))


def startDaemon(processes: Any, cpus: Optional[str], tcp: bool, python: str) -> Server:
    """
    The tlsession daemon, C{twistd -n tlsession}, under C{python}.
    """
    secretPath = processes.path("secret")
    fd = os.open(secretPath, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(SECRET + "\n")
    log = processes.path("daemon-twistd.log")
    argv = twistdArgv(python, log) + ["tlsession"]
    if tcp:
        port = freePort()
        argv += ["--listen", f"tcp:{port}:interface={LOOPBACK}", "--insecure"]
        endpoint = f"tcp:host={LOOPBACK}:port={port}:timeout=2"
    else:
        path = processes.path("daemon.sock")
        argv += ["--listen", f"unix:{path}"]
        endpoint = f"unix:path={path}:timeout=2"
    argv += ["--secret-file", secretPath, "--stats-interval", "0"]
    process = processes.start("daemon", argv, cpus=cpus, cwd=ROOT, otherLogs=[log])
    if tcp:
        waitForPort(port, process=process, timeout=60)
    else:
        waitForUnix(path, process, timeout=60)
    return Server("daemon", endpoint, process.pid, "twistd tlsession")


def postgresBinaries() -> str:
    """
    The directory with C{initdb} and C{postgres}: Debian keeps them off
    C{PATH}, in C{/usr/lib/postgresql/<version>/bin} (the newest is taken).
    """
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if found:
        return os.path.dirname(
            max(found, key=lambda p: [int(n) for n in re.findall(r"\d+", p)])
        )
    return os.path.dirname(findProgram("initdb"))


def startPostgres(processes: Any, cpus: Optional[str], tcp: bool) -> Server:
    """
    A throwaway PostgreSQL cluster in the temporary directory, running in
    the foreground (so it is one of the L{ProcessSet}'s groups), with
    C{fsync=off}. It refuses to run as root; as root it runs as the
    C{postgres} user.
    """
    binaries = postgresBinaries()
    directory = processes.path("postgres")
    os.mkdir(directory, 0o700)
    asUser: List[str] = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise BenchError(
                "PostgreSQL cannot run as root and there is no postgres user"
            ) from None
        os.chown(directory, owner.pw_uid, owner.pw_gid)
        # The postgres user must reach its directory, not list ours.
        os.chmod(processes.directory, 0o711)
        asUser = [findProgram("runuser"), "-u", "postgres", "--"]
    data = os.path.join(directory, "data")
    environment = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    initdb = [*asUser, os.path.join(binaries, "initdb"), "--pgdata", data]
    initdb += ["--username", PG_USER, "--auth", "trust", "--encoding", "UTF8"]
    initdb += ["--locale", "C", "--no-sync"]
    done = subprocess.run(
        initdb,
        cwd=directory,
        env=environment,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise BenchError(f"initdb failed: {done.stdout}{done.stderr}")
    port = freePort()
    program = os.path.join(binaries, "postgres")
    argv = [*asUser, program, "-D", data, "-k", directory, "-p", str(port)]
    argv += ["-c", f"listen_addresses={LOOPBACK if tcp else ''}"]
    # Throwaway data: no flush to disk (see bench/README.md).
    argv += ["-c", "fsync=off", "-c", "full_page_writes=off"]
    argv += ["-c", "max_connections=20", "-c", "shared_buffers=32MB"]
    process = processes.start(
        "postgres", argv, cpus=cpus, cwd=directory, env=environment
    )
    ready = [os.path.join(binaries, "pg_isready"), "-h", LOOPBACK if tcp else directory]
    ready += ["-p", str(port), "-U", PG_USER, "-d", "postgres", "-t", "1"]
    deadline = time.monotonic() + 60
    while True:
        process.check()
        if subprocess.run(ready, capture_output=True, timeout=30).returncode == 0:
            break
        if time.monotonic() > deadline:
            raise BenchError(f"PostgreSQL never accepted connections\n{process.tail()}")
        time.sleep(0.1)
    connection = {
        "host": LOOPBACK if tcp else directory,
        "port": port,
        "user": PG_USER,
        "dbname": "postgres",
    }
    version = programVersion([program, "--version"])
    return Server("postgresql", connection, process.pid, version)


def probeInterpreter(python: str) -> Dict[str, str]:
    """
    Which store dependencies C{python} can import.

    @return: module name to the reason it cannot be imported, for the
        modules that cannot.
    """
    probe = (
        "import importlib, json\nmissing = {}\n"
        "for name in ('txredisapi', 'psycopg'):\n"
        "    try:\n        importlib.import_module(name)\n"
        "    except ImportError as e:\n        missing[name] = str(e)\n"
        "print(json.dumps(missing))\n"
    )
    done = subprocess.run(
        [python, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )
    missing: Dict[str, str] = json.loads(done.stdout) if done.returncode == 0 else {}
    return missing


class ForeignShare(ForeignLoad):
    """
    How busy the machine was with processes that are not the benchmark's,
    as L{_harness.ForeignLoad} measures it, except that the descendants of
    the given process groups count as the benchmark's too: PostgreSQL's
    backends leave the postmaster's group, and would otherwise be counted
    as noise.
    """

    def ownCpuSeconds(self) -> float:
        """
        This process and its reaped children (the clients), and the servers
        with everything they forked.
        """
        return sum(os.times()[:4]) + serverCpuSeconds(sorted(self.groups))


def runStoreClient(
    processes: Any,
    options: argparse.Namespace,
    name: str,
    server: Optional[Server],
) -> Dict[str, Any]:
    """
    Run one client process for store C{name} and return its figures, with
    the share of the machine other processes used meanwhile.
    """
    resultPath = processes.path(f"result-{name}.json")
    timeLimit = options.warmup * 2 + options.duration * 3 + 60
    spec: Dict[str, Any] = {
        "store": name,
        "valueBytes": options.value_bytes,
        "concurrency": options.concurrency,
        "warmup": options.warmup,
        "duration": options.duration,
        "slices": options.slices,
        "serverGroups": [server.group] if server is not None else [],
        "endpoint": server.endpoint if server is not None else None,
        "secret": SECRET,
        "tcp": options.tcp,
        "resultPath": resultPath,
        "timeLimit": timeLimit,
    }
    if name == "sqlite":
        spec["path"] = processes.path("sessions.sqlite3")
    elif name == "files":
        spec["path"] = processes.path("files")
    specPath = processes.path(f"spec-{name}.json")
    with open(specPath, "w") as f:
        json.dump(spec, f)
    argv = [options.python, os.path.abspath(__file__), "--client", specPath]
    groups = [p.pid for p in processes.processes]
    with ForeignShare(groups) as load:
        client = processes.start(
            f"client-{name}", argv, cpus=options.client_cpus, cwd=ROOT
        )
        load.groups.add(client.pid)
        deadline = time.monotonic() + timeLimit + 30
        while client.alive():
            for process in processes.processes:
                if process is not client:
                    process.check()
            if time.monotonic() > deadline:
                break
            time.sleep(0.05)
    tail = client.tail(40)
    client.stop()
    processes.processes.remove(client)
    if not os.path.exists(resultPath):
        raise BenchError(f"the {name} client failed:\n{tail}")
    with open(resultPath) as f:
        result: Dict[str, Any] = json.load(f)
    result["others"] = load.fraction
    return result


def mergeRuns(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """
    One store's rounds as one result: the median rate of the rounds, CPU
    per op over all of them, the median of each round's latency
    percentiles, every slice for the spread, and every error.
    """
    merged: Dict[str, Any] = {
        "store": runs[0]["store"],
        "rounds": len(runs),
        "others": max(r["others"] for r in runs),
    }
    for phase in ("sequential", "pipelined", "nearCache"):
        figures = [r[phase] for r in runs if phase in r]
        if not figures:
            continue
        total: Dict[str, Any] = {
            "opsPerSecond": statistics.median(f["opsPerSecond"] for f in figures),
            "sliceRates": [x for f in figures for x in f["sliceRates"]],
            "errors": sum(f["errors"] for f in figures),
            "errorSamples": [x for f in figures for x in f["errorSamples"]][:5],
        }
        for key in ("ops", "seconds", "clientCpu", "hits", "misses"):
            if key in figures[0]:
                total[key] = sum(f[key] for f in figures)
        servers = [f["serverCpu"] for f in figures]
        total["serverCpu"] = None if None in servers else sum(servers)
        if "hits" in total and "misses" in total:
            looked = total["hits"] + total["misses"]
            total["hitRate"] = total["hits"] / looked if looked else 0.0
        for kind in ("load", "save"):
            measured = [f[kind] for f in figures if f.get(kind)]
            if measured:
                total[kind] = {
                    key: statistics.median(m[key] for m in measured)
                    for key in ("mean", "p50", "p99")
                }
        merged[phase] = total
    if "storeStats" in runs[-1]:
        merged["storeStats"] = runs[-1]["storeStats"]
    return merged


# Summaries and output


def spread(rates: Sequence[float]) -> float:
    """
    (max - min) / median of the slice rates.
    """
    middle = statistics.median(rates) if rates else 0.0
    return (max(rates) - min(rates)) / middle if middle else 0.0


def _ratio(value: Optional[float], base: Optional[float]) -> Optional[float]:
    if value is None or not base:
        return None
    return value / base


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _perOp(seconds: Optional[float], ops: int) -> Optional[float]:
    if seconds is None or not ops:
        return None
    return seconds * 1e6 / ops


def rate(results: Dict[str, Dict[str, Any]], name: str, phase: str) -> Optional[float]:
    """
    The ops/s of C{name} in C{phase}, if it was measured.
    """
    if name not in results:
        return None
    value: float = results[name][phase]["opsPerSecond"]
    return value


def formatSequential(results: Dict[str, Dict[str, Any]]) -> str:
    """
    The sequential table: one load+save pair at a time on one session.
    """
    header = (
        f"{'store':<14} {'us/pair':>8} {'ops/s':>8} {'xraw':>6} {'xredis':>6} "
        f"{'load p50':>8} {'p99':>7} {'save p50':>8} {'p99':>7} "
        f"{'cli us/op':>9} {'srv us/op':>9} {'errors':>6}"
    )
    lines = [header, "-" * len(header)]
    raw, redis = (
        rate(results, "redis-raw", "sequential"),
        rate(results, "redis", "sequential"),
    )
    for name, r in results.items():
        s = r["sequential"]
        load, save = s.get("load") or {}, s.get("save") or {}
        perPair = 2e6 / s["opsPerSecond"] if s["opsPerSecond"] else None
        lines.append(
            f"{name:<14} {_fmt(perPair, '.1f'):>8} "
            f"{s['opsPerSecond']:>8.0f} "
            f"{_fmt(_ratio(s['opsPerSecond'], raw), '.2f'):>6} "
            f"{_fmt(_ratio(s['opsPerSecond'], redis), '.2f'):>6} "
            f"{_fmt(load.get('p50'), '.1f'):>8} {_fmt(load.get('p99'), '.1f'):>7} "
            f"{_fmt(save.get('p50'), '.1f'):>8} {_fmt(save.get('p99'), '.1f'):>7} "
            f"{_fmt(_perOp(s['clientCpu'], s['ops']), '.1f'):>9} "
            f"{_fmt(_perOp(s['serverCpu'], s['ops']), '.1f'):>9} {s['errors']:>6}"
        )
    return "\n".join(lines)


def formatPipelined(results: Dict[str, Dict[str, Any]], concurrency: int) -> str:
    """
    The pipelined table: C{concurrency} load+save loops at once.
    """
    header = (
        f"{'store':<14} {'ops/s':>8} {'xraw':>6} {'xredis':>6} {'spread':>7} "
        f"{'cli us/op':>9} {'srv us/op':>9} {'hits':>5} {'errors':>6} {'others':>6}"
    )
    lines = [header, "-" * len(header)]
    raw, redis = (
        rate(results, "redis-raw", "pipelined"),
        rate(results, "redis", "pipelined"),
    )
    others = 0.0
    for name, r in results.items():
        p = r["pipelined"]
        others = max(others, r["others"])
        hits = p.get("hits")
        hitShare = (
            f"{hits * 200 / p['ops']:.0f}%" if hits is not None and p["ops"] else "-"
        )
        lines.append(
            f"{name:<14} {p['opsPerSecond']:>8.0f} "
            f"{_fmt(_ratio(p['opsPerSecond'], raw), '.2f'):>6} "
            f"{_fmt(_ratio(p['opsPerSecond'], redis), '.2f'):>6} "
            f"{spread(p['sliceRates']) * 100:>6.1f}% "
            f"{_fmt(_perOp(p['clientCpu'], p['ops']), '.1f'):>9} "
            f"{_fmt(_perOp(p['serverCpu'], p['ops']), '.1f'):>9} "
            f"{hitShare:>5} "
            f"{p['errors']:>6} {r['others'] * 100:>5.0f}%"
        )
    if others > NOISY:
        lines.append(
            f"   NOTE: other processes used up to {others * 100:.0f}% of the machine"
            " during these runs; the figures are noisy"
        )
    return "\n".join(lines)


def formatNearCache(results: Dict[str, Dict[str, Any]]) -> str:
    """
    The near-cache table: loads of warm sessions answered in the client.
    """
    near = results["pb"]["nearCache"]
    rawSeq = rate(results, "redis-raw", "sequential")
    rawPipe = rate(results, "redis-raw", "pipelined")
    redisSeq = rate(results, "redis", "sequential")
    header = (
        f"{'store':<14} {'hits/s':>10} {'hit rate':>8} {'x raw seq':>9} "
        f"{'x raw pipe':>10} {'x redis seq':>11} {'spread':>7} {'cli us/op':>9}"
    )
    return "\n".join(
        [
            header,
            "-" * len(header),
            f"{'pb near cache':<14} {near['opsPerSecond']:>10.0f} "
            f"{near['hitRate'] * 100:>7.1f}% "
            f"{_fmt(_ratio(near['opsPerSecond'], rawSeq), '.1f'):>9} "
            f"{_fmt(_ratio(near['opsPerSecond'], rawPipe), '.1f'):>10} "
            f"{_fmt(_ratio(near['opsPerSecond'], redisSeq), '.1f'):>11} "
            f"{spread(near['sliceRates']) * 100:>6.1f}% "
            f"{_fmt(_perOp(near['clientCpu'], near['ops']), '.2f'):>9}",
        ]
    )


def evaluateTargets(results: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """
    Compare the PB store's figures with the issue's targets.

    @return: one entry per target that could be judged.
    """
    checks = []
    rawPipe = rate(results, "redis-raw", "pipelined")
    for name, label in (
        ("pb-nocache", "PB pipelined ops/s vs raw txredisapi (no near cache)"),
        ("pb", "PB pipelined ops/s vs raw txredisapi (near cache on)"),
    ):
        ratio = _ratio(rate(results, name, "pipelined"), rawPipe)
        if ratio is not None:
            checks.append(
                {
                    "what": label,
                    "value": ratio,
                    "goal": f">= {PB_THROUGHPUT_TARGET}",
                    "pass": ratio >= PB_THROUGHPUT_TARGET,
                }
            )
    rawSeq = rate(results, "redis-raw", "sequential")
    if "pb" in results and "nearCache" in results["pb"]:
        ratio = _ratio(results["pb"]["nearCache"]["opsPerSecond"], rawSeq)
        if ratio is not None:
            checks.append(
                {
                    "what": "near-cache hits/s vs raw txredisapi sequential ops/s",
                    "value": ratio,
                    "goal": f">= {NEAR_CACHE_TARGET:g}",
                    "pass": ratio >= NEAR_CACHE_TARGET,
                }
            )
    return checks


def formatTargets(checks: List[Dict[str, Any]], implementation: str) -> str:
    """
    The PASS/MISS list.
    """
    return "\n".join(
        targetLines(
            checks,
            f"targets (set for CPython; this run: {implementation})",
            "redis-raw or pb was not measured",
            56,
        )
    )


def formatErrors(results: Dict[str, Dict[str, Any]]) -> List[str]:
    """
    A line per phase that had failed operations, with the first messages.
    """
    lines = []
    for name, r in results.items():
        for phase in ("sequential", "pipelined", "nearCache"):
            figures = r.get(phase)
            if figures and figures["errors"]:
                lines.append(
                    f"   NOTE: {name} {phase}: {figures['errors']} failed operations: "
                    + "; ".join(figures["errorSamples"])
                )
    return lines


# Main


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        description="Benchmark the tlsession stores from one Twisted client."
    )
    parser.add_argument(
        "--python",
        default=os.path.join(ROOT, ".venv", "bin", "python"),
        help="interpreter of the client and of the PB daemon; "
        "e.g. .venv-pypy/bin/python",
    )
    parser.add_argument(
        "--stores", default=",".join(STORES), help="comma-separated subset"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=2.5,
        help="seconds per measured phase (2.5), cut into --slices",
    )
    parser.add_argument(
        "--slices", type=int, default=3, help="slices per phase, for the spread (3)"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="rounds over all the stores, taken in turn; medians (2; 1 with --quick)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds of unmeasured load per store before measuring (1; 3 on PyPy)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=64,
        help="load+save loops in flight in the pipelined phase (64)",
    )
    parser.add_argument(
        "--value-bytes", type=int, default=256, help="session data size (256)"
    )
    parser.add_argument(
        "--tcp",
        action="store_true",
        help="reach the servers over 127.0.0.1 TCP instead of unix sockets",
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s phases, 1 slice"
    )
    parser.add_argument(
        "--client-cpus", default="0", help="taskset list for the client (0)"
    )
    parser.add_argument(
        "--server-cpus",
        default="1",
        help="taskset list for redis, memcached, PostgreSQL and the daemon (1)",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs)"
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.duration, options.slices = 1.0, 1
        options.rounds = 1 if options.rounds is None else options.rounds
        options.warmup = 0.5 if options.warmup is None else options.warmup
    if options.rounds is None:
        options.rounds = 2
    options.python = os.path.abspath(options.python)
    if options.no_pin:
        options.client_cpus = options.server_cpus = None
    options.stores = [s for s in options.stores.split(",") if s]
    for s in options.stores:
        if s not in STORES:
            parser.error(f"unknown store {s} (known: {', '.join(STORES)})")
    if (
        options.duration <= 0
        or min(options.slices, options.rounds, options.concurrency) < 1
    ):
        parser.error(
            "--duration, --slices, --rounds and --concurrency must be positive"
        )
    if not 1 <= options.value_bytes <= 65536:
        parser.error("--value-bytes must be between 1 and 65536")
    return options


def describe(
    options: argparse.Namespace,
    interpreter: Dict[str, str],
    servers: Dict[str, Server],
) -> List[str]:
    """
    The header lines: the machine, the software, the pinning, the method.
    """
    machine = machineDescription()
    implementation = interpreter["implementation"]
    if interpreter["pypy"]:
        implementation += f" {interpreter['pypy']} (Python {interpreter['version']})"
    else:
        implementation += f" {interpreter['version']}"
    pinning = (
        "none"
        if options.no_pin
        else f"client on CPU {options.client_cpus}; redis, memcached, PostgreSQL "
        f"and the daemon on CPU {options.server_cpus} (in-process stores: the "
        "client's CPU only)"
    )
    peers = "; ".join(
        server.version for name, server in servers.items() if name != "daemon"
    )
    return [
        "tlsession stores benchmark",
        f"  machine   {machine['cpu']}, {machine['cores']} cores, kernel "
        f"{machine['kernel']}, frequency governor {machine['governor']}",
        f"  client    {implementation}, Twisted {interpreter['twisted']}, epoll "
        "reactor; the PB daemon runs on the same interpreter",
        f"  peers     {peers or 'none'}",
        f"  transport {'127.0.0.1 TCP' if options.tcp else 'unix sockets'}; "
        "PostgreSQL fsync=off; SQLite WAL synchronous=NORMAL; files not durable",
        f"  pinning   {pinning}",
        f"  load avg  {loadAverage()} at start",
        f"  method    {options.value_bytes}-byte session data; per store "
        f"{options.warmup:g} s warm-up, then {options.duration:g} s sequential "
        f"(1 session) and {options.duration:g} s pipelined ({options.concurrency} "
        f"sessions, one loop each), each in {options.slices} slices; "
        f"{options.rounds} round(s) over all stores in turn, medians",
        "  an op is one load() or one save() call completed; a pair is a load "
        "then a save of the same session",
    ]


def startServers(
    processes: Any, options: argparse.Namespace, notes: List[str]
) -> Dict[str, Server]:
    """
    Start the servers the chosen stores need; a server whose program is not
    installed drops its stores, with a note.
    """
    wanted = {SERVER_OF[s] for s in options.stores if s in SERVER_OF}
    servers: Dict[str, Server] = {}
    starters: Dict[str, Callable[[], Server]] = {
        "redis": lambda: startRedis(processes, options.server_cpus, options.tcp),
        "memcached": lambda: startMemcached(
            processes, options.server_cpus, options.tcp
        ),
        "daemon": lambda: startDaemon(
            processes, options.server_cpus, options.tcp, options.python
        ),
        "postgresql": lambda: startPostgres(
            processes, options.server_cpus, options.tcp
        ),
    }
    for name, start in starters.items():
        if name not in wanted:
            continue
        try:
            servers[name] = start()
        except BenchError as e:
            if "is not installed" not in str(e) and "postgres user" not in str(e):
                raise
            dropped = [s for s in options.stores if SERVER_OF.get(s) == name]
            notes.append(f"  NOTE: {', '.join(dropped)} skipped: {e}")
            options.stores = [s for s in options.stores if s not in dropped]
    return servers


def main(argv: Sequence[str]) -> int:
    """
    Run the benchmark and print the report.

    @return: the exit status: 0 when it ran (targets missed or not); errors
        raise L{BenchError}.
    """
    options = parseArguments(argv)
    interpreter = pythonDescription(options.python)
    if options.warmup is None:
        options.warmup = 3.0 if interpreter["pypy"] else 1.0
    notes: List[str] = []
    missing = probeInterpreter(options.python)
    for store, module in IMPORTS.items():
        if store in options.stores and module in missing:
            notes.append(
                f"  NOTE: {store} skipped: {options.python} cannot import {module} "
                f"({missing[module]})"
            )
            options.stores.remove(store)

    runs: Dict[str, List[Dict[str, Any]]] = {name: [] for name in options.stores}
    with ProcessSet(prefix="bench-sessions-", keep=options.keep) as processes:
        servers = startServers(processes, options, notes)
        report = describe(options, interpreter, servers)
        print("\n".join(report + notes), flush=True)
        for name in options.stores:
            print(f"  {name:<14} {STORES[name]}")
        if options.keep:
            print(f"  logs in {processes.directory}")
        print(flush=True)
        # Rounds go over every store in turn, so that drift of the machine
        # (other tenants) spreads over all of them alike.
        for turn in range(options.rounds):
            for name in options.stores:
                server = servers.get(SERVER_OF.get(name, ""))
                run = runStoreClient(processes, options, name, server)
                runs[name].append(run)
                s, p = run["sequential"], run["pipelined"]
                print(
                    f"  round {turn + 1} {name:<14} sequential "
                    f"{s['opsPerSecond']:>8.0f} ops/s, pipelined "
                    f"{p['opsPerSecond']:>8.0f} ops/s",
                    flush=True,
                )
    results = {name: mergeRuns(r) for name, r in runs.items() if r}
    print()
    if not results:
        print("no store was measured")
        return 0
    print(
        "== sequential: one load+save pair at a time on one session ==\n"
        "   xraw, xredis: ops/s over redis-raw's and redis's; latencies in us\n"
        + formatSequential(results)
        + "\n"
    )
    print(
        f"== pipelined: {options.concurrency} load+save loops in flight, one "
        "session each ==\n"
        "   xraw, xredis: ops/s over redis-raw's and redis's; hits: loads the "
        "near cache answered\n" + formatPipelined(results, options.concurrency) + "\n"
    )
    if "pb" in results and "nearCache" in results["pb"]:
        print(
            f"== near-cache hits: loads of {options.concurrency} warm sessions, "
            "one caller, no round trip ==\n"
            "   x raw seq: over redis-raw's sequential ops/s (the target's "
            "baseline); x raw pipe: over its pipelined ops/s\n"
            + formatNearCache(results)
            + "\n"
        )
    errors = formatErrors(results)
    if errors:
        print("\n".join(errors) + "\n")
    checks = evaluateTargets(results)
    print(formatTargets(checks, interpreter["implementation"]))
    if options.json:
        with open(options.json, "w") as f:
            json.dump(
                {
                    "machine": report + notes,
                    "options": {k: v for k, v in vars(options).items() if k != "json"},
                    "results": results,
                    "runs": runs,
                    "targets": checks,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--client":
        sys.exit(clientMain(sys.argv[2]))
    runScript(main, "sessions.py")
