"""
Shared helpers for the benchmark scripts in this directory: ports, child
processes that are always cleaned up, wrk runs, and /proc readings.

Nothing here knows about a particular proxy; each C{bench/*.py} script builds
its own scenario from these pieces.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Callable, Dict, List, NoReturn, Optional, Sequence, Set, Tuple

import attrs

LOOPBACK = "127.0.0.1"

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_SEARCH = os.pathsep.join(
    [os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"]
)


class BenchError(RuntimeError):
    """
    A benchmark could not run: a program is missing, a process died, a port
    never opened.  The message says which and, when known, shows its log.
    """


def findProgram(name: str) -> str:
    """
    Find an executable, looking in the sbin directories too (nginx, haproxy).

    @param name: the program name.
    @return: its absolute path.
    @raise BenchError: when it is not installed.
    """
    path = shutil.which(name, path=_SEARCH)
    if path is None:
        raise BenchError(f"{name} is not installed")
    return path


def freePort(host: str = LOOPBACK) -> int:
    """
    Pick a TCP port that is free right now on C{host}.

    Another process could take it before the caller binds it; on a quiet
    benchmark machine that does not happen in practice.

    @return: the port number.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


# /proc readings


def cpuSeconds(pid: int) -> float:
    """
    User plus system CPU time the process has used so far.

    @param pid: the process.
    @return: seconds.
    """
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name is in parentheses and may itself hold spaces or
    # parentheses, so split after the last ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    # Fields 14 and 15 of proc(5) (utime, stime) are 11 and 12 after the name.
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def _statusField(pid: int, name: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
    raise BenchError(f"no {name} in /proc/{pid}/status")


def rssBytes(pid: int) -> int:
    """
    The process's resident set size right now (C{VmRSS}).

    @param pid: the process.
    @return: bytes.
    """
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * _PAGE_SIZE


def peakRssBytes(pid: int) -> int:
    """
    The highest resident set size the process has had since it started
    (C{VmHWM}).

    @param pid: the process.
    @return: bytes.
    """
    return _statusField(pid, "VmHWM")


class RssSampler:
    """
    Sample a process's RSS on a background thread and keep the peak.

    Use as a context manager around the load; the thread stops on exit and
    never runs longer than C{limit} seconds.

    @ivar peak: the highest RSS seen, in bytes.
    @ivar samples: how many readings were taken.
    """

    def __init__(self, pid: int, interval: float = 0.02, limit: float = 600.0):
        self.pid = pid
        self.interval = interval
        self.limit = limit
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self.peak = max(self.peak, rssBytes(self.pid))
            except OSError:
                return
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(self.interval * 10 + 1)


def _machineBusySeconds() -> float:
    with open("/proc/stat") as f:
        fields = f.readline().split()
    # user nice system idle iowait irq softirq steal ...: everything but
    # idle and iowait is busy.
    values = [int(v) for v in fields[1:9]]
    return (sum(values) - values[3] - values[4]) / _CLOCK_TICKS


def _groupCpuSeconds(groups: Set[int]) -> float:
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # Field 5 of proc(5), the process group, is 2 after the name.
        if int(fields[2]) in groups:
            total += (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS
    return total


class ForeignLoad:
    """
    How busy the machine was with processes that are not the benchmark's,
    over a stretch of time; a high figure means the results are noisy.

    The benchmark's own CPU is this process, its reaped children (wrk) and
    every process in the given process groups (the L{ManagedProcess}es and
    anything they forked).  Use as a context manager.

    @ivar fraction: after exit, the other processes' share of all CPUs,
        from 0 to 1.
    """

    def __init__(self, groups: Sequence[int]):
        self.groups = set(groups)
        self.fraction = 0.0
        self._start: Tuple[float, float, float] = (0.0, 0.0, 0.0)

    def ownCpuSeconds(self) -> float:
        """
        CPU seconds the benchmark's own processes used so far: this process,
        its reaped children, and the watched process groups.
        """
        return sum(os.times()[:4]) + _groupCpuSeconds(self.groups)

    def _snapshot(self) -> Tuple[float, float, float]:
        return time.monotonic(), _machineBusySeconds(), self.ownCpuSeconds()

    def __enter__(self) -> ForeignLoad:
        self._start = self._snapshot()
        return self

    def __exit__(self, *exc: object) -> None:
        end = self._snapshot()
        wall = end[0] - self._start[0]
        foreign = (end[1] - self._start[1]) - (end[2] - self._start[2])
        if wall > 0:
            self.fraction = max(0.0, foreign / (wall * (os.cpu_count() or 1)))


def loadAverage() -> str:
    """
    @return: the 1, 5 and 15 minute load averages, as the kernel prints them.
    """
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# Child processes


class ManagedProcess:
    """
    A child process in its own process group, with its output in a log file.

    L{stop} signals the whole group (TERM, then KILL after a grace period),
    so helpers it forked (nginx workers) go too.

    @ivar name: a short label for messages.
    @ivar pid: the child's process id.
    @ivar logPath: where its stdout and stderr go.
    @ivar otherLogs: log files the program writes itself (twistd's
        C{--logfile}); their tails are shown too when it fails.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        logPath: str,
        cpus: Optional[str] = None,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        otherLogs: Sequence[str] = (),
    ):
        self.name = name
        self.logPath = logPath
        self.otherLogs = list(otherLogs)
        self.argv = list(argv)
        if cpus:
            # taskset execs the command, so the pid we hold is the program's.
            self.argv = [findProgram("taskset"), "-c", cpus, *self.argv]
        self._log: IO[bytes] = open(logPath, "ab")
        try:
            self._popen = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        except BaseException:
            self._log.close()
            raise
        self.pid = self._popen.pid

    def alive(self) -> bool:
        """
        @return: whether the process is still running.
        """
        return self._popen.poll() is None

    def tail(self, lines: int = 20) -> str:
        """
        The last lines of the process's logs, for error messages.
        """
        parts = []
        for path in [self.logPath, *self.otherLogs]:
            try:
                with open(path, "rb") as f:
                    f.seek(0, os.SEEK_END)
                    f.seek(max(0, f.tell() - 8192))
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            if text.strip():
                parts.append(f"--- {path}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts)

    def check(self) -> None:
        """
        @raise BenchError: when the process has exited, with its log tail.
        """
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with status {self._popen.returncode}:\n"
                + self.tail()
            )

    def stop(self, grace: float = 5.0) -> None:
        """
        Stop the process group: SIGTERM, then SIGKILL after C{grace} seconds.
        Safe to call more than once.
        """
        try:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                try:
                    os.killpg(self.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    self._popen.wait(wait)
                    # The leader is gone; sweep any helpers left in the group.
                    try:
                        os.killpg(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:
            # Reap it, in case the group was already gone before we waited.
            self._popen.poll()
            self._log.close()


class ProcessSet:
    """
    Owns a temporary directory and every process started through it; on exit
    (normal, exception or Ctrl-C) all processes are stopped in reverse order
    and the directory is removed.

    @ivar directory: the temporary directory, for configs, logs and files.
    """

    def __init__(self, prefix: str = "bench-", keep: bool = False):
        self.directory = tempfile.mkdtemp(prefix=prefix)
        self.keep = keep
        self.processes: List[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpus: Optional[str] = None,
        cwd: Optional[str] = None,
        env: Optional[Dict[str, str]] = None,
        otherLogs: Sequence[str] = (),
    ) -> ManagedProcess:
        """
        Start C{argv} as a L{ManagedProcess} logging to C{<directory>/<name>.log}.
        """
        process = ManagedProcess(
            name,
            argv,
            os.path.join(self.directory, f"{name}.log"),
            cpus=cpus,
            cwd=cwd,
            env=env,
            otherLogs=otherLogs,
        )
        self.processes.append(process)
        return process

    def path(self, name: str) -> str:
        """
        @return: the absolute path of C{name} inside the temporary directory.
        """
        return os.path.join(self.directory, name)

    def close(self) -> None:
        """
        Stop every process and remove the directory (unless C{keep}).
        """
        # Ignore a second Ctrl-C while cleaning up, so nothing is left behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while self.processes:
                self.processes.pop().stop()
            if not self.keep:
                shutil.rmtree(self.directory, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def waitForPort(
    port: int,
    host: str = LOOPBACK,
    timeout: float = 20.0,
    process: Optional[ManagedProcess] = None,
) -> None:
    """
    Wait until something accepts TCP connections on C{host:port}.

    @param process: when given, fail at once if it exits while we wait.
    @raise BenchError: on timeout or when C{process} dies.
    """
    deadline = time.monotonic() + timeout
    while True:
        if process is not None:
            process.check()
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            tail = "\n" + process.tail() if process is not None else ""
            raise BenchError(f"nothing listens on {host}:{port} after {timeout}s{tail}")
        time.sleep(0.05)


def httpGet(
    port: int, path: str = "/", host: str = LOOPBACK, timeout: float = 10.0
) -> Tuple[int, bytes]:
    """
    One HTTP/1.1 GET with C{Connection: close}, reading to EOF.

    @return: the status code and the body (everything after the head).
    @raise BenchError: on a malformed answer or a timeout.
    """
    deadline = time.monotonic() + timeout
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    chunks = []
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(request.encode("ascii"))
            while time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as e:
        raise BenchError(f"GET {host}:{port}{path} failed: {e}") from e
    data = b"".join(chunks)
    head, sep, body = data.partition(b"\r\n\r\n")
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ", head)
    if not sep or match is None:
        raise BenchError(f"GET {host}:{port}{path}: no HTTP answer: {data[:200]!r}")
    return int(match.group(1)), body


# wrk

_WRK_SCRIPT = """\
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK-RESULT {\\"requests\\": %d, \\"duration_us\\": %d, \\"bytes\\": %d, "
    .. "\\"connect\\": %d, \\"read\\": %d, \\"write\\": %d, \\"status\\": %d, "
    .. "\\"timeout\\": %d, \\"p50\\": %d, \\"p90\\": %d, \\"p99\\": %d, "
    .. "\\"max\\": %d, \\"mean\\": %.1f}\\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


@attrs.frozen
class WrkResult:
    """
    What one wrk run measured.  Latencies are in microseconds.

    @ivar errors: wrk's socket error counts (connect, read, write, timeout)
        and C{status}, the count of non-2xx/3xx answers.
    """

    requests: int
    seconds: float
    bytes: int
    p50: float
    p90: float
    p99: float
    maxLatency: float
    meanLatency: float
    errors: Dict[str, int]

    @property
    def requestsPerSecond(self) -> float:
        """
        Completed requests per second of the run.
        """
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def bytesPerSecond(self) -> float:
        """
        Bytes read per second (heads and bodies).
        """
        return self.bytes / self.seconds if self.seconds else 0.0

    @property
    def errorCount(self) -> int:
        """
        All socket errors and bad statuses together.
        """
        return sum(self.errors.values())


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _micros(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if match is None:
        raise BenchError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parseWrkOutput(text: str) -> WrkResult:
    """
    Parse wrk's output.

    The exact figures come from the C{WRK-RESULT} line the L{runWrk} Lua
    script prints; without it (plain C{wrk --latency}) the rounded figures of
    the human-readable report are used.

    @raise BenchError: when neither form is present.
    """
    for line in text.splitlines():
        if line.startswith("WRK-RESULT "):
            raw = json.loads(line[len("WRK-RESULT ") :])
            return WrkResult(
                requests=raw["requests"],
                seconds=raw["duration_us"] / 1e6,
                bytes=raw["bytes"],
                p50=float(raw["p50"]),
                p90=float(raw["p90"]),
                p99=float(raw["p99"]),
                maxLatency=float(raw["max"]),
                meanLatency=float(raw["mean"]),
                errors={
                    k: raw[k] for k in ("connect", "read", "write", "timeout", "status")
                },
            )
    total = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)(\w+) read", text)
    percentiles = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)$", text, re.MULTILINE))
    latency = re.search(r"Latency\s+(\S+)\s+\S+\s+(\S+)", text)
    if total is None or len(percentiles) < 3 or latency is None:
        raise BenchError(f"cannot parse wrk output:\n{text}")
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}
    errors = {"connect": 0, "read": 0, "write": 0, "timeout": 0, "status": 0}
    socketErrors = re.search(
        r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if socketErrors is not None:
        for key, value in zip(
            ("connect", "read", "write", "timeout"), socketErrors.groups()
        ):
            errors[key] = int(value)
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if status is not None:
        errors["status"] = int(status.group(1))
    return WrkResult(
        requests=int(total.group(1)),
        seconds=_micros(total.group(2)) / 1e6,
        bytes=int(float(total.group(3)) * scale[total.group(4)]),
        p50=_micros(percentiles["50"]),
        p90=_micros(percentiles["90"]),
        p99=_micros(percentiles["99"]),
        maxLatency=_micros(latency.group(2)),
        meanLatency=_micros(latency.group(1)),
        errors=errors,
    )


@attrs.frozen
class MeasuredRun:
    """
    A wrk run plus the CPU time one observed process spent during it.

    @ivar cpuSeconds: the process's user+system CPU during the run, or
        C{None} when no process was observed.
    @ivar foreign: the share of all CPUs other processes used during the
        run (see L{ForeignLoad}), or C{None} when not measured.
    """

    wrk: WrkResult
    cpuSeconds: Optional[float]
    foreign: Optional[float] = None

    @property
    def cpuMicrosPerRequest(self) -> Optional[float]:
        """
        CPU microseconds the observed process spent per completed request.
        """
        if self.cpuSeconds is None or not self.wrk.requests:
            return None
        return self.cpuSeconds * 1e6 / self.wrk.requests


def runWrk(
    url: str,
    duration: float,
    connections: int,
    threads: int = 1,
    headers: Sequence[str] = (),
    cpus: Optional[str] = None,
    observe: Optional[int] = None,
    timeoutSeconds: int = 5,
    ownGroups: Optional[Sequence[int]] = None,
) -> MeasuredRun:
    """
    Run wrk once against C{url} and return its figures.

    @param duration: seconds of load (rounded up to whole seconds, wrk's unit).
    @param connections: open connections (C{-c}).
    @param threads: wrk threads (C{-t}).
    @param headers: extra request headers, e.g. C{"Connection: close"}.
    @param cpus: a taskset CPU list to pin wrk to, or C{None}.
    @param observe: a pid whose CPU time is read before and after the run.
    @param timeoutSeconds: wrk's per-request timeout.
    @param ownGroups: when given, the process groups of the benchmark's own
        processes: the run then records the L{ForeignLoad}.
    @raise BenchError: when wrk fails or its output cannot be parsed.
    """
    seconds = max(1, int(-(-duration // 1)))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(_WRK_SCRIPT)
    try:
        argv = [
            findProgram("wrk"),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            f"--timeout={timeoutSeconds}s",
            "--latency",
            "-s",
            script.name,
        ]
        for header in headers:
            argv += ["-H", header]
        argv.append(url)
        if cpus:
            argv = [findProgram("taskset"), "-c", cpus, *argv]
        load = ForeignLoad(ownGroups or ())
        before = cpuSeconds(observe) if observe is not None else None
        try:
            with load:
                done = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=seconds + timeoutSeconds + 30,
                )
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"wrk did not finish: {' '.join(argv)}") from e
        after = cpuSeconds(observe) if observe is not None else None
    finally:
        os.unlink(script.name)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr}{done.stdout}")
    used = after - before if before is not None and after is not None else None
    foreign = load.fraction if ownGroups is not None else None
    return MeasuredRun(parseWrkOutput(done.stdout), used, foreign)


# The machine


def _firstLine(argv: Sequence[str]) -> str:
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unavailable ({e})"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def cpuModel() -> str:
    """
    @return: the CPU model name from C{/proc/cpuinfo}.
    """
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def frequencyGovernor() -> str:
    """
    @return: the CPU frequency governor of CPU 0, or a note that the
        machine exposes none (typical of virtual machines).
    """
    path = "/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return "not exposed"


def pythonDescription(python: str) -> Dict[str, str]:
    """
    Describe another interpreter: implementation, version, Twisted version.

    @param python: the interpreter's path.
    """
    probe = (
        "import json, platform, sys, twisted;"
        "print(json.dumps({'implementation': platform.python_implementation(),"
        "'version': sys.version.split()[0],"
        "'pypy': '.'.join(map(str, getattr(sys, 'pypy_version_info', ())[:3])),"
        "'twisted': twisted.__version__}))"
    )
    done = subprocess.run(
        [python, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise BenchError(f"{python} cannot import Twisted: {done.stderr.strip()}")
    result: Dict[str, str] = json.loads(done.stdout)
    return result


def machineDescription() -> Dict[str, str]:
    """
    The facts about this machine a benchmark result must carry.
    """
    return {
        "cpu": cpuModel(),
        "cores": str(os.cpu_count()),
        "governor": frequencyGovernor(),
        "kernel": platform.release(),
        "harness_python": platform.python_implementation()
        + " "
        + sys.version.split()[0],
    }


def programVersion(argv: Sequence[str]) -> str:
    """
    The first line a program prints when asked for its version.
    """
    return _firstLine(argv)


# Targets


def targetLines(
    checks: Sequence[Dict[str, object]], title: str, unjudged: str, width: int
) -> List[str]:
    """
    The PASS/MISS list of a benchmark's targets: a C{== title ==} line,
    then one line per check (a dict with C{what}, C{value}, C{goal} and
    C{pass}), C{what} padded to C{width}; C{unjudged} says why when there
    are no checks.
    """
    lines = [f"== {title} =="]
    if not checks:
        lines.append(f"   none judged: {unjudged}")
    for check in checks:
        verdict = "PASS" if check["pass"] else "MISS"
        lines.append(
            f"   {check['what']:<{width}} {check['value']:>7.2f}"
            f"  (goal {check['goal']})  {verdict}"
        )
    return lines


# Running a script


def _stopOnTerm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def runScript(main: Callable[[Sequence[str]], int], name: str) -> NoReturn:
    """
    Run a benchmark script's C{main} with the command line and exit with
    its status. SIGTERM stops it as Ctrl-C does, so its processes are
    stopped either way; a L{BenchError} is printed as one line (status 1),
    an interruption says so (status 130).

    @param name: the script's file name, for messages (C{"cache.py"}).
    """
    signal.signal(signal.SIGTERM, _stopOnTerm)
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as e:
        print(f"bench/{name}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"bench/{name}: interrupted; processes stopped", file=sys.stderr)
        sys.exit(130)
