"""
Benchmark TLS handshakes: full and resumed handshakes per second against a
tlbalance C{ssl:} listener, beside HAProxy terminating TLS with the same
certificate and cipher suites, both in front of the same nginx; print the
ratios.

Run C{python bench/tls.py --help} for the options; bench/README.md says what
each figure means.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import statistics
import time
from typing import Any, Dict, List, Optional, Sequence, Set

import attrs
from _harness import (
    LOOPBACK,
    BenchError,
    ForeignLoad,
    ProcessSet,
    cpuSeconds,
    findProgram,
    freePort,
    loadAverage,
    machineDescription,
    programVersion,
    pythonDescription,
    runScript,
    waitForPort,
)
from balancer import SMALL_BODY, Target, startNginx, twistdArgv
from OpenSSL import SSL, crypto

from tlbalance._selfsigned import selfSignedPEM
from tlbalance.tls import DEFAULT_CIPHERS, TLS13_CIPHERSUITES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ALL_TARGETS = ("haproxy", "tlbalance")
# (protocol, resumed): every connection a full handshake, or every one but
# each client's first offering the session of its previous connection.
MODES = {
    "tls1.2-full": (SSL.TLS1_2_VERSION, False),
    "tls1.2-resumed": (SSL.TLS1_2_VERSION, True),
    "tls1.3-full": (SSL.TLS1_3_VERSION, False),
    "tls1.3-resumed": (SSL.TLS1_3_VERSION, True),
}
REQUEST = (
    f"GET /small HTTP/1.1\r\nHost: {LOOPBACK}\r\nConnection: close\r\n\r\n"
).encode("ascii")
# Share of the machine other processes may use before a table is flagged.
NOISY = 0.10


# The processes


def haproxyConfig(port: int, certificate: str, backends: Sequence[int]) -> str:
    """
    HAProxy on one thread terminating TLS as tlbalance does by default: TLS
    1.2 and 1.3, the same suites, tickets and a session cache (HAProxy's
    defaults), in TCP mode, round robin over C{backends}.
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
    bind {LOOPBACK}:{port} ssl crt {certificate} ssl-min-ver TLSv1.2 ciphers {DEFAULT_CIPHERS} ciphersuites {TLS13_CIPHERSUITES}
    default_backend nginx
backend nginx
    balance roundrobin
{servers}
"""  # noqa: E501


def startHaproxy(
    processes: ProcessSet, cpus: Optional[str], certificate: str, backends: List[int]
) -> Target:
    """
    Start HAProxy in the foreground (C{-db}) with L{haproxyConfig}.
    """
    port = freePort()
    config = processes.path("haproxy.cfg")
    with open(config, "w") as f:
        f.write(haproxyConfig(port, certificate, backends))
    haproxy = processes.start(
        "haproxy", [findProgram("haproxy"), "-f", config, "-db"], cpus=cpus
    )
    waitForPort(port, process=haproxy)
    return Target(
        "haproxy",
        port,
        haproxy.pid,
        "HAProxy, nbthread 1, mode tcp, bind ... ssl (its own ticket keys and "
        "session cache)",
    )


def startTlbalance(
    processes: ProcessSet,
    cpus: Optional[str],
    python: str,
    certificate: str,
    backends: List[int],
) -> Target:
    """
    Start C{twistd tlbalance} with an C{ssl:} listener over C{backends},
    logging only connections that end in an error.
    """
    port = freePort()
    twistdLog = processes.path("tlbalance-twistd.log")
    argv = twistdArgv(python, twistdLog) + [
        "tlbalance",
        "--listen",
        f"ssl:{port}:privateKey={certificate}:interface={LOOPBACK}",
        "--dontlog-normal",
    ]
    for backend in backends:
        argv += ["--backend", f"tcp:host={LOOPBACK}:port={backend}"]
    process = processes.start(
        "tlbalance", argv, cpus=cpus, cwd=ROOT, otherLogs=[twistdLog]
    )
    waitForPort(port, process=process, timeout=60)
    return Target(
        "tlbalance",
        port,
        process.pid,
        "twistd tlbalance, epoll reactor, ssl: listener, --dontlog-normal",
        python=True,
    )


# The client


@attrs.frozen
class ClientCounts:
    """
    What the client processes of one run did.

    @ivar connections: connections that completed a handshake and an
        exchange.
    @ivar certificates: handshakes in which the server sent its
        certificate: the full ones.
    @ivar errors: connections that failed or got a wrong answer.
    @ivar group: the key exchange group of the last connection.
    """

    connections: int
    certificates: int
    errors: int
    group: str


def _clientLoop(
    port: int,
    version: int,
    resume: bool,
    seconds: float,
    p256: bool,
    cpus: Optional[Set[int]],
    results: Any,
) -> None:
    """
    One client process: connect, shake hands, GET /small, read to the end,
    close; again until C{seconds} have passed. With C{resume}, each
    connection offers the session of the one before; with C{p256}, P-256 is
    the only key exchange group offered.
    """
    if cpus:
        os.sched_setaffinity(0, cpus)
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_min_proto_version(version)
    context.set_max_proto_version(version)
    if p256:
        context.set_tmp_ecdh(crypto.get_elliptic_curve("prime256v1"))
    certificates = [0]

    def stateChanged(connection: SSL.Connection, where: int, ret: int) -> None:
        if connection.get_state_string() == b"SSLv3/TLS read server certificate":
            certificates[0] += 1

    context.set_info_callback(stateChanged)
    session = None
    connections = errors = 0
    group = "-"
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock = socket.create_connection((LOOPBACK, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = SSL.Connection(context, sock)
        connection.set_connect_state()
        if resume and session is not None:
            connection.set_session(session)
        answer = b""
        try:
            connection.sendall(REQUEST)
            while True:
                try:
                    chunk = connection.recv(65536)
                except SSL.Error:
                    # The end: a close_notify, or (HAProxy passing on
                    # nginx's close) a bare TCP close; the answer is
                    # checked below.
                    break
                if not chunk:
                    break
                answer += chunk
        except (OSError, SSL.Error):
            errors += 1
        else:
            if answer.startswith(b"HTTP/1.1 200") and answer.endswith(SMALL_BODY):
                connections += 1
                group = connection.get_group_name() or "-"
                if resume:
                    session = connection.get_session()
            else:
                errors += 1
        finally:
            # Without a close_notify of its own, OpenSSL's client marks the
            # session not resumable when the connection is freed.
            try:
                connection.shutdown()
            except SSL.Error:
                pass
            sock.close()
    results.put((connections, certificates[0], errors, group))


def runClients(
    port: int,
    mode: str,
    seconds: float,
    clients: int,
    p256: bool,
    cpus: Optional[Set[int]],
) -> ClientCounts:
    """
    Run C{clients} client processes against C{port} for C{seconds} in
    C{mode} and add up what they did.
    """
    version, resume = MODES[mode]
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    workers = [
        context.Process(
            target=_clientLoop,
            args=(port, version, resume, seconds, p256, cpus, results),
        )
        for _ in range(clients)
    ]
    for worker in workers:
        worker.start()
    counts = [results.get(timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join(10)
    connections, certificates, errors = (sum(c[i] for c in counts) for i in range(3))
    return ClientCounts(connections, certificates, errors, counts[-1][3])


@attrs.frozen
class Measured:
    """
    One run against one target in one mode.

    @ivar cpuSeconds: the proxy's user+system CPU during the run.
    @ivar foreign: the share of all CPUs other processes used.
    """

    counts: ClientCounts
    seconds: float
    cpuSeconds: float
    foreign: float

    @property
    def perSecond(self) -> float:
        """
        Connections per second.
        """
        return self.counts.connections / self.seconds

    @property
    def cpuMicros(self) -> Optional[float]:
        """
        Proxy CPU microseconds per connection.
        """
        if not self.counts.connections:
            return None
        return self.cpuSeconds * 1e6 / self.counts.connections

    @property
    def resumedShare(self) -> float:
        """
        The share of handshakes in which the server did not send its
        certificate.
        """
        if not self.counts.connections:
            return 0.0
        return 1 - self.counts.certificates / self.counts.connections


def measure(
    target: Target,
    mode: str,
    options: argparse.Namespace,
    cpus: Optional[Set[int]],
    groups: Sequence[int],
) -> Measured:
    """
    Load C{target} in C{mode} once, reading the proxy's CPU time around it.
    """
    assert target.pid is not None
    load = ForeignLoad(groups)
    before = cpuSeconds(target.pid)
    started = time.monotonic()
    with load:
        counts = runClients(
            target.port, mode, options.duration, options.clients, options.p256, cpus
        )
    elapsed = time.monotonic() - started
    used = cpuSeconds(target.pid) - before
    return Measured(counts, elapsed, used, load.fraction)


# Reporting


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def summarize(runs: Sequence[Measured]) -> Dict[str, Any]:
    """
    The medians of one cell's runs.
    """
    cpu = [r.cpuMicros for r in runs if r.cpuMicros is not None]
    return {
        "per_second": _median([r.perSecond for r in runs]),
        "cpu_us": _median(cpu) if cpu else None,
        "resumed": _median([r.resumedShare for r in runs]),
        "errors": sum(r.counts.errors for r in runs),
        "others": max(r.foreign for r in runs),
        "group": runs[-1].counts.group,
    }


def formatTable(summaries: Dict[str, Dict[str, Dict[str, Any]]]) -> str:
    """
    One row per mode and target, with the ratio to HAProxy.
    """
    lines = [
        f"{'mode':<15} {'target':<10} {'conn/s':>8} {'xHAProxy':>8} "
        f"{'CPU us/conn':>11} {'resumed':>8} {'errors':>6} {'others':>6}  group",
        "-" * 96,
    ]
    noisy = False
    for mode, byTarget in summaries.items():
        base = byTarget.get("haproxy")
        for name, cell in byTarget.items():
            ratio = (
                f"{cell['per_second'] / base['per_second']:.2f}"
                if base and base["per_second"]
                else "-"
            )
            cpu = f"{cell['cpu_us']:,.0f}" if cell["cpu_us"] is not None else "-"
            noisy = noisy or cell["others"] > NOISY
            lines.append(
                f"{mode:<15} {name:<10} {cell['per_second']:>8,.0f} {ratio:>8} "
                f"{cpu:>11} {cell['resumed']:>7.0%} {cell['errors']:>6} "
                f"{cell['others']:>6.0%}  {cell['group']}"
            )
    if noisy:
        lines.append(
            f"NOTE: other processes used more than {NOISY:.0%} of the machine in "
            "some run: trust CPU us/conn, not conn/s"
        )
    return "\n".join(lines)


def resumptionGains(summaries: Dict[str, Dict[str, Dict[str, Any]]]) -> List[str]:
    """
    For each target and protocol, resumed over full: connections per second
    and proxy CPU per connection.
    """
    lines = ["== resumed / full handshakes =="]
    for protocol in ("tls1.2", "tls1.3"):
        full = summaries.get(f"{protocol}-full", {})
        resumed = summaries.get(f"{protocol}-resumed", {})
        for name in ALL_TARGETS:
            if name not in full or name not in resumed:
                continue
            rate = resumed[name]["per_second"] / max(full[name]["per_second"], 1e-9)
            cpu = "-"
            if full[name]["cpu_us"] and resumed[name]["cpu_us"]:
                cpu = f"{full[name]['cpu_us'] / resumed[name]['cpu_us']:.2f}x less"
            lines.append(
                f"   {protocol} {name:<10} conn/s x{rate:.2f}, CPU per connection {cpu}"
            )
    return lines


# Running


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        description="Full and resumed TLS handshakes/s: tlbalance against HAProxy."
    )
    parser.add_argument(
        "--python",
        default=os.path.join(ROOT, ".venv", "bin", "python"),
        help="interpreter that runs twistd tlbalance",
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds (3)")
    parser.add_argument("--runs", type=int, default=1, help="runs per cell (1)")
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds per target (1)"
    )
    parser.add_argument("--clients", type=int, default=4, help="client processes (4)")
    parser.add_argument(
        "--p256",
        action="store_true",
        help="clients offer only P-256 for key exchange (by default they offer "
        "what their OpenSSL does: X25519MLKEM768 first with OpenSSL 3.5+)",
    )
    parser.add_argument(
        "--targets", default=",".join(ALL_TARGETS), help="comma-separated subset"
    )
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset"
    )
    parser.add_argument(
        "--proxy-cpus", default="0", help="taskset list for the proxy (0)"
    )
    parser.add_argument(
        "--client-cpus", default="1", help="CPUs of the clients and nginx (1)"
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    options = parser.parse_args(argv)
    options.python = os.path.abspath(options.python)
    if options.no_pin or (os.cpu_count() or 1) < 2:
        options.proxy_cpus = options.client_cpus = None
    options.targets = [t for t in options.targets.split(",") if t]
    options.modes = [m for m in options.modes.split(",") if m]
    for t in options.targets:
        if t not in ALL_TARGETS:
            parser.error(f"unknown target {t}")
    for m in options.modes:
        if m not in MODES:
            parser.error(f"unknown mode {m}")
    if options.duration <= 0 or options.runs < 1 or options.clients < 1:
        parser.error("--duration, --runs and --clients must be positive")
    return options


def describe(options: argparse.Namespace, interpreter: Dict[str, str]) -> List[str]:
    """
    The header lines: the machine, the software, the pinning, the load.
    """
    machine = machineDescription()
    openssl = SSL.OpenSSL_version(SSL.OPENSSL_VERSION).decode()
    groups = "P-256 only" if options.p256 else "their OpenSSL's default groups"
    pinning = (
        "none"
        if options.proxy_cpus is None
        else f"proxy on CPU {options.proxy_cpus}, clients and nginx on CPU "
        f"{options.client_cpus}"
    )
    return [
        "TLS handshake benchmark",
        f"  machine   {machine['cpu']}, {machine['cores']} cores, kernel "
        f"{machine['kernel']}, frequency governor {machine['governor']}",
        f"  tlbalance {interpreter['implementation']} {interpreter['version']}, "
        f"Twisted {interpreter['twisted']}, {openssl} (the client's and, from "
        "the same venv, tlbalance's)",
        f"  peers     {programVersion([findProgram('haproxy'), '-v'])}; "
        f"{programVersion([findProgram('nginx'), '-v'])}",
        "  cert      ECDSA P-256, self-signed; tlbalance's default suites on both, "
        "the client's order",
        f"  load      {options.clients} client processes, each: connect, "
        "handshake, GET /small (100 bytes, Connection: close), read to the end; "
        f"key exchange: {groups}",
        f"  pinning   {pinning}",
        f"  load avg  {loadAverage()} at start",
        f"  runs      {options.runs} x {options.duration:g} s per cell after "
        f"{options.warmup:g} s warm-up per target; medians",
    ]


def main(argv: Sequence[str]) -> int:
    """
    Run the benchmark and print the report.

    @return: 0 when it ran; errors raise L{BenchError}.
    """
    options = parseArguments(argv)
    interpreter = pythonDescription(options.python)
    report = describe(options, interpreter)
    print("\n".join(report), flush=True)
    clientCpus = (
        {int(c) for c in options.client_cpus.split(",")}
        if options.client_cpus
        else None
    )
    summaries: Dict[str, Dict[str, Dict[str, Any]]] = {}
    with ProcessSet(prefix="bench-tls-", keep=options.keep) as processes:
        certificate = processes.path("site.pem")
        with open(certificate, "wb") as f:
            f.write(selfSignedPEM([LOOPBACK]))
        os.chmod(certificate, 0o644)
        direct, backends = startNginx(processes, options.client_cpus, {})
        targets = []
        for name in options.targets:
            if name == "haproxy":
                targets.append(
                    startHaproxy(processes, options.proxy_cpus, certificate, backends)
                )
            else:
                targets.append(
                    startTlbalance(
                        processes,
                        options.proxy_cpus,
                        options.python,
                        certificate,
                        backends,
                    )
                )
        for target in targets:
            print(f"  {target.name:<10} {target.note}")
        print(flush=True)
        groups = [p.pid for p in processes.processes]
        for target in targets:
            warm = runClients(
                target.port, "tls1.3-full", options.warmup, 1, options.p256, clientCpus
            )
            if not warm.connections:
                raise BenchError(
                    f"{target.name} completed no TLS connection in the warm-up "
                    f"({warm.errors} failed)"
                )
        for mode in options.modes:
            runs: Dict[str, List[Measured]] = {t.name: [] for t in targets}
            for _ in range(options.runs):
                for target in targets:
                    for process in processes.processes:
                        process.check()
                    runs[target.name].append(
                        measure(target, mode, options, clientCpus, groups)
                    )
            summaries[mode] = {name: summarize(r) for name, r in runs.items()}
    print(formatTable(summaries))
    print()
    print("\n".join(resumptionGains(summaries)))
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"machine": report, "summaries": summaries}, f, indent=2)
    return 0


if __name__ == "__main__":
    runScript(main, "tls.py")
