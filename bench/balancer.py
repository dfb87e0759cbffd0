"""
Benchmark tlbalance against HAProxy, twisted.protocols.portforward and a
direct connection, all in front of the same nginx, and print the ratios.

Run C{python bench/balancer.py --help} for the options; bench/README.md says
what each figure means.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import attrs
from _harness import (
    LOOPBACK,
    BenchError,
    MeasuredRun,
    ProcessSet,
    RssSampler,
    findProgram,
    freePort,
    httpGet,
    loadAverage,
    machineDescription,
    programVersion,
    pythonDescription,
    rssBytes,
    runScript,
    runWrk,
    targetLines,
    waitForPort,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL_BODY = b"0123456789" * 10
LARGE_SIZE = 1024 * 1024
MB = 1e6

# Targets set by the issue; ratios are tlbalance's figure over the baseline's.
KEEPALIVE_TARGET = 0.6
CLOSE_TARGET = 0.5
LARGE_TARGET = 0.8
RSS_LIMIT = 100 * MB
# Share of the machine other processes may use before a table is flagged.
NOISY = 0.10

# tlbalance-quiet is tlbalance with --dontlog-normal: HAProxy here logs
# nothing, so this is the like-for-like row; the targets are judged on the
# default (logging) tlbalance, with the quiet figures shown beside them.
# tlbalance-stats is tlbalance with --stats and a scraper reading /metrics
# every second: the control plane must not slow the data plane (within 3%).
ALL_TARGETS = (
    "direct",
    "haproxy",
    "portforward",
    "tlbalance",
    "tlbalance-quiet",
    "tlbalance-stats",
)
STATS_TARGET = 0.97
SCRAPE_INTERVAL = 1.0

# The scraper: one GET of /metrics per interval, for at most an hour, so it
# stops by itself even if nothing kills it.
SCRAPER = """
import sys, time, urllib.request
url, interval = sys.argv[1], float(sys.argv[2])
deadline = time.monotonic() + 3600
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(url, timeout=5).read()
    except OSError as e:
        print("scrape failed:", e, flush=True)
    time.sleep(interval)
"""
ALL_SCENARIOS = ("keepalive", "close", "large", "memory")


@attrs.frozen
class Target:
    """
    One thing wrk can be pointed at.

    @ivar pid: the process whose CPU and RSS are measured, or C{None} for
        the direct row (no proxy in the path).
    @ivar python: whether the proxy runs on the interpreter under test (its
        warm-up matters: PyPy's JIT).
    """

    name: str
    port: int
    pid: Optional[int]
    note: str
    python: bool = False


@attrs.frozen
class Scenario:
    """
    One wrk load shape, run against every target.
    """

    key: str
    title: str
    path: str
    connections: int
    headers: Tuple[str, ...] = ()
    throughput: bool = False


SCENARIOS = {
    "keepalive": Scenario(
        "keepalive", "keep-alive, 100-byte responses", "/small", connections=50
    ),
    "close": Scenario(
        "close",
        "one connection per request (Connection: close), 100-byte responses",
        "/small",
        connections=50,
        headers=("Connection: close",),
    ),
    "large": Scenario(
        "large",
        "keep-alive, 1 MiB responses",
        "/1m",
        connections=10,
        throughput=True,
    ),
}


# The processes


def nginxConfig(directory: str, ports: Sequence[int]) -> str:
    """
    An nginx configuration serving C{/small} (100 bytes from memory) and the
    static files in C{<directory>/www} on each port, with one worker.
    """
    listens = "\n".join(f"        listen {LOOPBACK}:{port};" for port in ports)
    temps = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
daemon off;
pid {directory}/nginx.pid;
error_log {directory}/nginx-error.log warn;
worker_rlimit_nofile 8192;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
{temps}
    # One wrk connection must stay open for the whole run: nginx would
    # otherwise close it after 1000 requests and the proxies would pay
    # reconnects the scenario does not ask for.
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    server {{
{listens}
        root {directory}/www;
        location = /small {{
            default_type text/plain;
            return 200 "{SMALL_BODY.decode("ascii")}";
        }}
    }}
}}
"""


def startNginx(
    processes: ProcessSet, cpus: Optional[str], largeSizes: Dict[str, int]
) -> Tuple[Target, List[int]]:
    """
    Start one nginx (one worker) listening on two ports.

    @param largeSizes: static files to create, name to size in bytes.
    @return: the direct target (first port) and both backend ports.
    """
    www = processes.path("www")
    os.mkdir(www)
    # nginx drops its workers to an unprivileged user when started as root;
    # they must still read the files.
    os.chmod(processes.directory, 0o755)
    os.chmod(www, 0o755)
    block = bytes(range(256)) * 256
    for name, size in largeSizes.items():
        with open(os.path.join(www, name), "wb") as f:
            for _ in range(size // len(block)):
                f.write(block)
            f.write(block[: size % len(block)])
        os.chmod(os.path.join(www, name), 0o644)
    ports = [freePort(), freePort()]
    while ports[1] == ports[0]:
        ports[1] = freePort()
    config = processes.path("nginx.conf")
    with open(config, "w") as f:
        f.write(nginxConfig(processes.directory, ports))
    nginx = processes.start(
        "nginx",
        [
            findProgram("nginx"),
            "-p",
            processes.directory,
            "-c",
            config,
            "-e",
            processes.path("nginx-error.log"),
        ],
        cpus=cpus,
    )
    for port in ports:
        waitForPort(port, process=nginx)
    return Target("direct", ports[0], None, "wrk straight to nginx"), ports


def haproxyConfig(port: int, backends: Sequence[int]) -> str:
    """
    HAProxy in TCP mode on one thread, round robin over C{backends}.
    """
    servers = "\n".join(
        f"    server s{i} {LOOPBACK}:{backend}" for i, backend in enumerate(backends)
    )
    return f"""\
global
    nbthread 1
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend bench
    bind {LOOPBACK}:{port}
    default_backend nginx
backend nginx
    balance roundrobin
{servers}
"""


def startHaproxy(
    processes: ProcessSet, cpus: Optional[str], backends: Sequence[int]
) -> Target:
    """
    Start HAProxy in the foreground (C{-db}) with L{haproxyConfig}.
    """
    port = freePort()
    config = processes.path("haproxy.cfg")
    with open(config, "w") as f:
        f.write(haproxyConfig(port, backends))
    haproxy = processes.start(
        "haproxy", [findProgram("haproxy"), "-f", config, "-db"], cpus=cpus
    )
    waitForPort(port, process=haproxy)
    return Target(
        "haproxy",
        port,
        haproxy.pid,
        f"HAProxy, nbthread 1, mode tcp, roundrobin over {len(backends)} backends",
    )


def twistdCommand(python: str) -> List[str]:
    """
    How to start twistd under C{python}.

    C{python -m twisted.scripts.twistd} is not it: that module has no main
    block, so it imports and exits 0 without doing anything.
    """
    return [python, "-c", "from twisted.scripts.twistd import run; run()"]


def twistdArgv(python: str, logPath: str) -> List[str]:
    """
    The twistd command line shared by portforward and tlbalance: foreground,
    no pid file, epoll reactor, log to a file so terminal I/O is not measured.
    """
    return [
        *twistdCommand(python),
        "-n",
        "--pidfile=",
        f"--logfile={logPath}",
        "--reactor=epoll",
    ]


def startPortforward(
    processes: ProcessSet, cpus: Optional[str], python: str, backend: int
) -> Target:
    """
    Start C{twistd portforward} to one backend (it cannot balance).
    """
    port = freePort()
    twistdLog = processes.path("portforward-twistd.log")
    argv = twistdArgv(python, twistdLog) + [
        "portforward",
        "-p",
        f"tcp:{port}:interface={LOOPBACK}",
        "-h",
        LOOPBACK,
        "-d",
        str(backend),
    ]
    process = processes.start(
        "portforward", argv, cpus=cpus, cwd=ROOT, otherLogs=[twistdLog]
    )
    waitForPort(port, process=process, timeout=60)
    return Target(
        "portforward",
        port,
        process.pid,
        "twisted.protocols.portforward, epoll reactor, ONE backend",
        python=True,
    )


def tlbalanceWorks(python: str) -> Tuple[bool, str]:
    """
    Whether C{twistd tlbalance --help} runs and lists the options we use.

    @return: the answer and, when it is no, why.
    """
    argv = [*twistdCommand(python), "-n", "--pidfile=", "tlbalance"]
    try:
        done = subprocess.run(
            argv + ["--help"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, str(e)
    text = done.stdout + done.stderr
    if done.returncode != 0 or "--backend" not in text or "--listen" not in text:
        lines = text.strip().splitlines()
        return False, (lines[-1] if lines else f"exit status {done.returncode}")
    return True, ""


def startTlbalance(
    processes: ProcessSet,
    cpus: Optional[str],
    python: str,
    backends: Sequence[int],
    quiet: bool = False,
    stats: Optional[str] = None,
) -> Target:
    """
    Start C{twistd tlbalance} over C{backends} with idle timeouts off (and,
    when C{quiet}, with C{--dontlog-normal}; with C{stats}, the taskset list
    for a scraper, with C{--stats} and that scraper reading C{/metrics}
    every second).
    """
    name = "tlbalance-quiet" if quiet else "tlbalance"
    if stats is not None:
        name = "tlbalance-stats"
    port = freePort()
    twistdLog = processes.path(f"{name}-twistd.log")
    argv = twistdArgv(python, twistdLog) + [
        "tlbalance",
        "--listen",
        f"tcp:{port}:interface={LOOPBACK}",
    ]
    for backend in backends:
        argv += ["--backend", f"tcp:host={LOOPBACK}:port={backend}"]
    argv += ["--client-timeout", "0", "--server-timeout", "0"]
    if quiet:
        argv.append("--dontlog-normal")
    statsPort = freePort()
    if stats is not None:
        argv += ["--stats", f"tcp:{statsPort}:interface={LOOPBACK}"]
    process = processes.start(name, argv, cpus=cpus, cwd=ROOT, otherLogs=[twistdLog])
    waitForPort(port, process=process, timeout=60)
    note = f"twistd tlbalance, epoll reactor, roundrobin over {len(backends)} backends"
    if quiet:
        note += ", --dontlog-normal (no line per normal connection)"
    if stats is not None:
        waitForPort(statsPort, process=process, timeout=60)
        processes.start(
            "scraper",
            [
                sys.executable,
                "-c",
                SCRAPER,
                f"http://{LOOPBACK}:{statsPort}/metrics",
                str(SCRAPE_INTERVAL),
            ],
            cpus=stats,
        )
        note += f", --stats with /metrics scraped every {SCRAPE_INTERVAL:g} s"
    return Target(name, port, process.pid, note, python=True)


def checkTarget(target: Target, largeName: str, largeSize: int) -> None:
    """
    Fetch both resources once through C{target} and check them, so that a
    broken proxy fails here rather than as a row of wrk errors.
    """
    status, body = httpGet(target.port, "/small")
    if status != 200 or body != SMALL_BODY:
        raise BenchError(f"{target.name}: /small gave {status}, {len(body)} bytes")
    status, body = httpGet(target.port, "/" + largeName)
    if status != 200 or len(body) != largeSize:
        raise BenchError(
            f"{target.name}: /{largeName} gave {status}, {len(body)} bytes"
        )


# Slow readers


@attrs.frozen
class SlowReadResult:
    """
    What the slow-reader run saw.

    @ivar baselineRss: the proxy's RSS before the readers connected.
    @ivar peakRss: the highest RSS sampled while they read.
    @ivar completed: readers that received the whole file.
    """

    readers: int
    size: int
    baselineRss: int
    peakRss: int
    completed: int
    receivedBytes: int
    seconds: float
    samples: int


def slowRead(
    port: int,
    readers: int,
    path: str,
    size: int,
    chunk: int,
    interval: float,
    timeLimit: float,
) -> Tuple[int, int, float]:
    """
    Open C{readers} connections to C{port}, ask each for C{path}, and read
    at most C{chunk} bytes per connection every C{interval} seconds.

    The client's receive buffer is kept small so that the kernel cannot
    absorb the file: the proxy must hold back the rest itself.

    @return: connections that got the whole body, bytes received in total,
        and the elapsed seconds.
    """
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    received: Dict[socket.socket, int] = {}
    complete = 0
    started = time.monotonic()
    deadline = started + timeLimit
    try:
        for _ in range(readers):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            received[s] = 0
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, chunk)
            s.settimeout(10)
            s.connect((LOOPBACK, port))
            s.sendall(request.encode("ascii"))
            s.setblocking(False)
        open_ = set(received)
        nextTick = time.monotonic()
        while open_ and time.monotonic() < deadline:
            for s in list(open_):
                budget = chunk
                while budget > 0:
                    try:
                        data = s.recv(budget)
                    except OSError as e:
                        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                            break
                        open_.discard(s)
                        break
                    if not data:
                        open_.discard(s)
                        # The head is a few hundred bytes on top of the body.
                        if received[s] >= size:
                            complete += 1
                        break
                    received[s] += len(data)
                    budget -= len(data)
            nextTick += interval
            pause = nextTick - time.monotonic()
            if pause > 0:
                time.sleep(pause)
    finally:
        for s in received:
            s.close()
    return complete, sum(received.values()), time.monotonic() - started


def runSlowReaders(
    target: Target, readers: int, name: str, size: int, cpus: Optional[str]
) -> SlowReadResult:
    """
    Run L{slowRead} against C{target} while sampling its RSS.

    The reader loop runs in this process, pinned to C{cpus} for the duration.
    """
    assert target.pid is not None
    chunk, interval = 64 * 1024, 0.05
    perReader = size / (chunk / interval)
    previous = os.sched_getaffinity(0)
    if cpus:
        os.sched_setaffinity(0, _cpuSet(cpus))
    try:
        baseline = rssBytes(target.pid)
        with RssSampler(target.pid, interval=0.02, limit=perReader * 4 + 120) as rss:
            complete, total, seconds = slowRead(
                target.port,
                readers,
                "/" + name,
                size,
                chunk,
                interval,
                timeLimit=perReader * 4 + 60,
            )
    finally:
        os.sched_setaffinity(0, previous)
    return SlowReadResult(
        readers, size, baseline, rss.peak, complete, total, seconds, rss.samples
    )


def _cpuSet(cpus: str) -> Set[int]:
    result: Set[int] = set()
    for part in cpus.split(","):
        low, _, high = part.partition("-")
        result.update(range(int(low), int(high or low) + 1))
    return result


# Summaries and output


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarize(runs: Sequence[MeasuredRun]) -> Dict[str, Any]:
    """
    Median figures of several runs of one target in one scenario, with the
    spread of the throughput as (max - min) / median.
    """
    rates = [r.wrk.requestsPerSecond for r in runs]
    rps = statistics.median(rates)
    return {
        "rps": rps,
        "mbps": statistics.median(r.wrk.bytesPerSecond for r in runs) / MB,
        "p50_ms": statistics.median(r.wrk.p50 for r in runs) / 1e3,
        "p99_ms": statistics.median(r.wrk.p99 for r in runs) / 1e3,
        "cpu_us_per_req": _median([r.cpuMicrosPerRequest for r in runs]),
        "spread": (max(rates) - min(rates)) / rps if rps else 0.0,
        "errors": sum(r.wrk.errorCount for r in runs),
        "others": max((r.foreign for r in runs if r.foreign is not None), default=None),
        "requests": sum(r.wrk.requests for r in runs),
    }


def _ratio(value: float, base: Optional[Dict[str, Any]], key: str) -> Optional[float]:
    if base is None or not base[key]:
        return None
    return float(value / base[key])


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _percent(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def formatScenario(
    scenario: Scenario, summaries: Dict[str, Dict[str, Any]], runs: int, seconds: int
) -> str:
    """
    The table for one scenario: one row per target, ratios to HAProxy and to
    the direct connection.
    """
    key = "mbps" if scenario.throughput else "rps"
    unit = "MB/s" if scenario.throughput else "req/s"
    header = (
        f"{'target':<15} {unit:>9} {'xHAProxy':>8} {'xdirect':>8} {'spread':>7} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>10} {'errors':>7} {'others':>6}"
    )
    others = max(
        (v["others"] for v in summaries.values() if v["others"] is not None),
        default=0.0,
    )
    lines = [
        f"== {scenario.title} ==",
        f"   wrk -t1 -c{scenario.connections}"
        + "".join(f" -H {h!r}" for h in scenario.headers)
        + f" GET {scenario.path}; median of {runs} x {seconds} s",
        header,
        "-" * len(header),
    ]
    for name, summary in summaries.items():
        lines.append(
            f"{name:<15} {summary[key]:>9.{1 if scenario.throughput else 0}f} "
            f"{_fmt(_ratio(summary[key], summaries.get('haproxy'), key), '.2f'):>8} "
            f"{_fmt(_ratio(summary[key], summaries.get('direct'), key), '.2f'):>8} "
            f"{summary['spread'] * 100:>6.1f}% "
            f"{summary['p50_ms']:>8.3f} {summary['p99_ms']:>8.3f} "
            f"{_fmt(summary['cpu_us_per_req'], '.1f'):>10} {summary['errors']:>7} "
            f"{_percent(summary['others']):>6}"
        )
    if others > NOISY:
        lines.append(
            f"   NOTE: other processes used up to {others * 100:.0f}% of the machine"
            " during these runs; the figures are noisy"
        )
    return "\n".join(lines)


def formatMemory(results: Dict[str, SlowReadResult]) -> str:
    """
    The table for the slow-reader scenario.
    """
    header = (
        f"{'target':<15} {'base MB':>8} {'peak MB':>8} {'complete':>9} "
        f"{'MB read':>8} {'seconds':>8}"
    )
    lines: List[str] = []
    for name, r in results.items():
        if not lines:
            lines += [
                f"== {r.readers} slow readers x {r.size / 2**20:g} MiB "
                "(64 KiB per 50 ms each, client SO_RCVBUF 64 KiB) ==",
                header,
                "-" * len(header),
            ]
        lines.append(
            f"{name:<15} {r.baselineRss / MB:>8.1f} {r.peakRss / MB:>8.1f} "
            f"{r.completed:>4}/{r.readers:<4} {r.receivedBytes / MB:>8.0f} "
            f"{r.seconds:>8.1f}"
        )
    return "\n".join(lines)


def evaluateTargets(
    summaries: Dict[str, Dict[str, Dict[str, Any]]],
    memory: Dict[str, SlowReadResult],
) -> List[Dict[str, Any]]:
    """
    Compare tlbalance's figures with the issue's targets.

    @return: one entry per target that could be judged: what, the measured
        value, the goal and whether it passed.
    """
    checks = []
    for scenario, baseline, goal, label in (
        ("keepalive", "haproxy", KEEPALIVE_TARGET, "keep-alive req/s vs HAProxy"),
        ("close", "haproxy", CLOSE_TARGET, "connection-per-request req/s vs HAProxy"),
        ("large", "direct", LARGE_TARGET, "1 MiB responses MB/s vs direct"),
    ):
        rows = summaries.get(scenario, {})
        for name, suffix in (("tlbalance", ""), ("tlbalance-quiet", " (quiet)")):
            if name not in rows or baseline not in rows:
                continue
            key = "mbps" if scenario == "large" else "rps"
            ratio = _ratio(rows[name][key], rows[baseline], key)
            if ratio is not None:
                checks.append(
                    {
                        "what": label + suffix,
                        "value": ratio,
                        "goal": f">= {goal}",
                        "pass": ratio >= goal,
                    }
                )
    for scenario, label in (
        ("keepalive", "keep-alive req/s with --stats scraped vs without"),
        ("close", "connection-per-request req/s with --stats scraped vs without"),
    ):
        rows = summaries.get(scenario, {})
        if "tlbalance-stats" in rows and "tlbalance" in rows:
            ratio = _ratio(rows["tlbalance-stats"]["rps"], rows["tlbalance"], "rps")
            if ratio is not None:
                checks.append(
                    {
                        "what": label,
                        "value": ratio,
                        "goal": f">= {STATS_TARGET}",
                        "pass": ratio >= STATS_TARGET,
                    }
                )
    if "tlbalance" in memory:
        r = memory["tlbalance"]
        checks.append(
            {
                "what": f"{r.readers} slow readers x {r.size / 2**20:g} MiB: "
                "peak RSS MB",
                "value": r.peakRss / MB,
                "goal": f"< {RSS_LIMIT / MB:.0f}, all complete",
                "pass": r.peakRss < RSS_LIMIT and r.completed == r.readers,
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
            "tlbalance was not measured",
            48,
        )
    )


# Main


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        description="Benchmark tlbalance against HAProxy, portforward and direct."
    )
    parser.add_argument(
        "--python",
        default=os.path.join(ROOT, ".venv", "bin", "python"),
        help="interpreter that runs twistd (portforward, tlbalance); "
        "e.g. .venv-pypy/bin/python",
    )
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds per measured run (5)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per cell, interleaved; median (3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="seconds of warm-up load per target and scenario (2; 5 on PyPy)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 run of 2 s, small memory test",
    )
    parser.add_argument(
        "--targets", default=",".join(ALL_TARGETS), help="comma-separated subset"
    )
    parser.add_argument(
        "--scenarios", default=",".join(ALL_SCENARIOS), help="comma-separated subset"
    )
    parser.add_argument("--slow-readers", type=int, default=200)
    parser.add_argument("--slow-size-mb", type=float, default=10.0)
    parser.add_argument(
        "--proxy-cpus", default="0", help="taskset list for the proxy under test (0)"
    )
    parser.add_argument(
        "--client-cpus", default="1", help="taskset list for wrk and the readers (1)"
    )
    parser.add_argument(
        "--backend-cpus", default="1", help="taskset list for nginx (1)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs)"
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.duration, options.runs = 2, 1
        options.warmup = 1 if options.warmup is None else options.warmup
        options.slow_readers, options.slow_size_mb = 50, 2.0
    # The twistd processes run from the checkout; resolve a relative path
    # (.venv-pypy/bin/python) against where the user stands instead.
    options.python = os.path.abspath(options.python)
    if options.no_pin:
        options.proxy_cpus = options.client_cpus = options.backend_cpus = None
    options.targets = [t for t in options.targets.split(",") if t]
    options.scenarios = [s for s in options.scenarios.split(",") if s]
    for t in options.targets:
        if t not in ALL_TARGETS:
            parser.error(f"unknown target {t}")
    for s in options.scenarios:
        if s not in ALL_SCENARIOS:
            parser.error(f"unknown scenario {s}")
    if options.duration < 1 or options.runs < 1 or options.slow_readers < 1:
        parser.error("--duration, --runs and --slow-readers must be positive")
    return options


def describe(options: argparse.Namespace, interpreter: Dict[str, str]) -> List[str]:
    """
    The header lines: the machine, the software, the pinning.
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
        else f"proxy on CPU {options.proxy_cpus}, wrk/readers on CPU "
        f"{options.client_cpus}, nginx on CPU {options.backend_cpus}"
    )
    return [
        "tlbalance benchmark",
        f"  machine   {machine['cpu']}, {machine['cores']} cores, kernel "
        f"{machine['kernel']}, frequency governor {machine['governor']}",
        f"  proxies   {implementation}, Twisted {interpreter['twisted']}, "
        "reactor epoll (twistd --reactor=epoll)",
        f"  peers     {programVersion([findProgram('nginx'), '-v'])}; "
        f"{programVersion([findProgram('haproxy'), '-v'])}; "
        f"{programVersion([findProgram('wrk'), '--version'])}",
        f"  pinning   {pinning}",
        f"  load avg  {loadAverage()} at start",
        f"  runs      {options.runs} x {options.duration} s per cell, interleaved, "
        f"after {options.warmup} s warm-up (at most 2 s for the C programs); "
        "figures are medians",
    ]


def startTargets(
    processes: ProcessSet, options: argparse.Namespace, files: Dict[str, int]
) -> List[Target]:
    """
    Start nginx and every proxy asked for, check each answers correctly, and
    return the targets in the order of L{ALL_TARGETS}.
    """
    direct, backends = startNginx(processes, options.backend_cpus, files)
    running = {"direct": direct}
    cpus = options.proxy_cpus
    if "haproxy" in options.targets:
        running["haproxy"] = startHaproxy(processes, cpus, backends)
    if "portforward" in options.targets:
        running["portforward"] = startPortforward(
            processes, cpus, options.python, backends[0]
        )
    if "tlbalance" in options.targets:
        running["tlbalance"] = startTlbalance(processes, cpus, options.python, backends)
    if "tlbalance-quiet" in options.targets:
        running["tlbalance-quiet"] = startTlbalance(
            processes, cpus, options.python, backends, quiet=True
        )
    if "tlbalance-stats" in options.targets:
        running["tlbalance-stats"] = startTlbalance(
            processes, cpus, options.python, backends, stats=options.client_cpus
        )
    for target in running.values():
        checkTarget(target, "1m", LARGE_SIZE)
    return [running[name] for name in ALL_TARGETS if name in options.targets]


def runScenario(
    processes: ProcessSet,
    options: argparse.Namespace,
    scenario: Scenario,
    targets: Sequence[Target],
) -> Dict[str, List[MeasuredRun]]:
    """
    Warm every target up, then measure them in turn, C{options.runs} times.

    @return: the runs of each target, by name.
    """

    def measure(target: Target, seconds: int) -> MeasuredRun:
        for process in processes.processes:
            process.check()
        return runWrk(
            f"http://{LOOPBACK}:{target.port}{scenario.path}",
            seconds,
            scenario.connections,
            headers=scenario.headers,
            cpus=options.client_cpus,
            observe=target.pid,
            ownGroups=[p.pid for p in processes.processes],
        )

    runs: Dict[str, List[MeasuredRun]] = {t.name: [] for t in targets}
    for target in targets:
        # C programs need no JIT warm-up, only warm caches.
        measure(target, options.warmup if target.python else min(options.warmup, 2))
    # Interleave the targets so that drift of the machine (other tenants,
    # thermal) spreads over all of them alike.
    for _ in range(options.runs):
        for target in targets:
            runs[target.name].append(measure(target, options.duration))
    return runs


def main(argv: Sequence[str]) -> int:
    """
    Run the benchmark and print the report.

    @return: the exit status: 0 when it ran (targets missed or not); errors
        raise L{BenchError}.
    """
    options = parseArguments(argv)
    interpreter = pythonDescription(options.python)
    if options.warmup is None:
        options.warmup = 5 if interpreter["pypy"] else 2
    report = describe(options, interpreter)
    print("\n".join(report), flush=True)
    if "tlbalance" in options.targets:
        works, why = tlbalanceWorks(options.python)
        if not works:
            print(f"  NOTE: tlbalance skipped: twistd tlbalance --help fails: {why}")
            options.targets = [
                t for t in options.targets if not t.startswith("tlbalance")
            ]

    slowSize = int(options.slow_size_mb * 1024 * 1024)
    results: Dict[str, Any] = {"machine": report, "scenarios": {}, "memory": {}}
    summaries: Dict[str, Dict[str, Dict[str, Any]]] = {}
    memory: Dict[str, SlowReadResult] = {}
    with ProcessSet(prefix="bench-balancer-", keep=options.keep) as processes:
        targets = startTargets(processes, options, {"1m": LARGE_SIZE, "slow": slowSize})
        for target in targets:
            print(f"  {target.name:<15} {target.note}")
        if options.keep:
            print(f"  logs in {processes.directory}")
        print(flush=True)

        for key in options.scenarios:
            if key == "memory":
                continue
            runs = runScenario(processes, options, SCENARIOS[key], targets)
            summaries[key] = {name: summarize(r) for name, r in runs.items()}
            print(
                formatScenario(
                    SCENARIOS[key], summaries[key], options.runs, options.duration
                )
                + "\n",
                flush=True,
            )
            results["scenarios"][key] = {
                "summary": summaries[key],
                "runs": {
                    name: [
                        {
                            **attrs.asdict(r.wrk),
                            "cpu_seconds": r.cpuSeconds,
                            "others": r.foreign,
                        }
                        for r in rs
                    ]
                    for name, rs in runs.items()
                },
            }

        if "memory" in options.scenarios:
            for target in targets:
                if target.pid is None:
                    continue
                for process in processes.processes:
                    process.check()
                memory[target.name] = runSlowReaders(
                    target, options.slow_readers, "slow", slowSize, options.client_cpus
                )
            if memory:
                print(formatMemory(memory) + "\n", flush=True)
            results["memory"] = {name: attrs.asdict(r) for name, r in memory.items()}

    checks = evaluateTargets(summaries, memory)
    print(formatTargets(checks, interpreter["implementation"]))
    results["targets"] = checks
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    runScript(main, "balancer.py")
