"""
C{make demo}: the balancer in front of two twisted.web backends that share
their sessions through the tlsession daemon, all local.

- the session daemon, C{twistd tlsession}, on the unix socket
  C{run/sessions.sock} (mode 0600), with a random shared secret generated
  into C{run/session-secret} (mode 0600) on first use;
- tlbalance on http://127.0.0.1:8080 and https://127.0.0.1:8443 (a
  self-signed certificate is generated into C{run/} on first use);
- backend "A" on 127.0.0.1:8081 and backend "B" on the unix socket
  C{run/backend-b.sock}, both behind C{tlproxy:} so they see the real client
  address, which tlbalance sends them as a PROXY v2 header; both count your
  visits in the session they share, so the count goes on whichever answers;
- health checks every 2 s: stop one backend and the balancer routes around
  it;
- the balancer's status page on http://127.0.0.1:8404/ (and its
  C{/stats.json} and Prometheus C{/metrics}), where you see it happen;
- on both backends, C{/cached}: a page kept in the backend's render cache
  for 5 s, with a fragment re-rendered in the background every 10 s.

The daemon runs as a process of its own rather than inside the balancer
(C{twistd tlbalance --sessions ...} would host it there): that is how it is
deployed when the app processes live on other hosts, it lets you kill and
restart it without touching the balancer, and its log is its own.

Everything runs as child processes of this script. A child that is killed
is started again two seconds later, so you can watch what users notice
(kill a backend: the other one answers and the count goes on; kill the
daemon: pages answer 503 for a moment, then everyone gets a new session).
A child that fails on its own (exits with an error) stops the demo.
Ctrl-C (or SIGTERM) stops everything. The ports and the run directory can
be moved with the environment variables C{TLSUITE_DEMO_HTTP},
C{TLSUITE_DEMO_HTTPS}, C{TLSUITE_DEMO_BACKEND}, C{TLSUITE_DEMO_STATS} and
C{TLSUITE_DEMO_RUN} (the tests do).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("TLSUITE_DEMO_RUN", ROOT / "run"))
HTTP = int(os.environ.get("TLSUITE_DEMO_HTTP", "8080"))
HTTPS = int(os.environ.get("TLSUITE_DEMO_HTTPS", "8443"))
BACKEND = int(os.environ.get("TLSUITE_DEMO_BACKEND", "8081"))
STATS = int(os.environ.get("TLSUITE_DEMO_STATS", "8404"))

#: Seconds before a killed child is started again.
RESTART_DELAY = 2.0

#: Seconds the daemon has to start listening before the demo gives up.
START_TIMEOUT = 20.0

#: Seconds each child has to stop after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0

_stopping = False


def endpointPath(path: Path) -> str:
    """
    C{path} quoted for an endpoint string, where C{:} separates fields.
    """
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


def ensureSecret(path: Path) -> None:
    """
    Make the session daemon's shared secret on first use: 256 random bits,
    in a file only this user can read (created so, never widened later).
    An existing file is left as it is; the daemon checks it.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")


class Child:
    """
    One process of the demo: C{twistd -n} with its arguments, logging to
    C{RUN/NAME.log}. (A unix socket left behind by a killed child is no
    obstacle to its restart: Twisted's lock file next to it says it is
    stale.)
    """

    def __init__(
        self,
        name: str,
        description: str,
        arguments: List[str],
        env: Optional[Dict[str, str]] = None,
    ) -> None:
        self.name = name
        self.description = description
        self.arguments = arguments
        self.env = env or {}
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.restartAt: Optional[float] = None

    @property
    def log(self) -> Path:
        """
        Where the child logs.
        """
        return RUN / f"{self.name}.log"

    def start(self) -> None:
        """
        Start the child.
        """
        command = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "--logfile",
            str(self.log),
            *self.arguments,
        ]
        environment = dict(os.environ, **self.env)
        environment["PYTHONPATH"] = str(ROOT)
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment)
        self.restartAt = None

    def running(self) -> bool:
        """
        Whether the child's process is alive.
        """
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """
        Ask the child to stop.
        """
        if self.running():
            assert self.process is not None
            self.process.send_signal(signal.SIGTERM)

    def wait(self) -> None:
        """
        Wait for the child to stop, killing it after L{STOP_TIMEOUT}.
        """
        if self.process is None:
            return
        try:
            self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def children() -> List[Child]:
    """
    The demo's processes, the session daemon first.
    """
    certificate = RUN / "demo-cert.pem"
    secret = RUN / "session-secret"
    sessions = RUN / "sessions.sock"
    socketB = RUN / "backend-b.sock"
    backend = ["-y", str(ROOT / "examples" / "demo" / "backend.py")]
    shared = {
        "TLSUITE_DEMO_SESSIONS": f"unix:path={endpointPath(sessions)}",
        "TLSUITE_DEMO_SECRET_FILE": str(secret),
    }
    return [
        Child(
            "tlsession",
            f"the session daemon, unix socket {sessions}",
            [
                "tlsession",
                "--listen",
                f"unix:{endpointPath(sessions)}:mode=600",
                "--secret-file",
                str(secret),
                "--stats-interval",
                "10",
            ],
        ),
        Child(
            "backend-a",
            f"backend A, 127.0.0.1:{BACKEND}",
            backend,
            env=dict(
                shared,
                TLSUITE_DEMO_NAME="A",
                TLSUITE_DEMO_WHERE=f"tcp 127.0.0.1:{BACKEND}",
                TLSUITE_DEMO_LISTEN=f"tlproxy:tcp:{BACKEND}:interface=127.0.0.1",
            ),
        ),
        Child(
            "backend-b",
            f"backend B, unix socket {socketB}",
            backend,
            env=dict(
                shared,
                TLSUITE_DEMO_NAME="B",
                TLSUITE_DEMO_WHERE=f"unix socket {socketB.name}",
                TLSUITE_DEMO_LISTEN=f"tlproxy:unix:{endpointPath(socketB)}:mode=600",
            ),
        ),
        Child(
            "tlbalance",
            f"tlbalance, :{HTTP} and :{HTTPS}, status page :{STATS}",
            [
                "tlbalance",
                "--listen",
                f"tcp:{HTTP}:interface=127.0.0.1",
                "--listen",
                f"ssl:{HTTPS}:interface=127.0.0.1:"
                f"privateKey={endpointPath(certificate)}",
                "--backend",
                f"tcp:host=127.0.0.1:port={BACKEND}",
                "--backend",
                f"unix:path={endpointPath(socketB)}",
                "--send-proxy",
                "v2",
                "--check",
                "http GET /health 200",
                "--drain-timeout",
                "5",
                "--stats",
                f"tcp:{STATS}:interface=127.0.0.1",
                "--control",
                str(RUN / "control.sock"),
            ],
        ),
    ]


#: The demo's TCP ports, with the variable that moves each.
PORTS = (
    ("TLSUITE_DEMO_HTTP", HTTP, "tlbalance, plain"),
    ("TLSUITE_DEMO_HTTPS", HTTPS, "tlbalance, TLS"),
    ("TLSUITE_DEMO_BACKEND", BACKEND, "backend A"),
    ("TLSUITE_DEMO_STATS", STATS, "tlbalance's status page"),
)


def takenPorts() -> List[str]:
    """
    One line for each of the demo's ports that another process holds on
    127.0.0.1, saying how to choose another; none when all are free.
    """
    taken = []
    for variable, port, role in PORTS:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As the listeners will: a port left in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as e:
                taken.append(
                    f"port {port} ({role}) cannot be used: {e.strerror}; another"
                    f" process holds it. Stop that process, or choose another"
                    f" port: {variable}={port + 1000} make demo"
                )
    return taken


def waitForSocket(path: Path, child: Child) -> bool:
    """
    Wait until C{child} accepts connections on the unix socket C{path}.

    @return: C{False} if it exited or took longer than L{START_TIMEOUT}.
    """
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and child.running() and not _stopping:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                time.sleep(0.1)
                continue
        return True
    return False


def supervise(processes: List[Child]) -> int:
    """
    Start a killed child again after L{RESTART_DELAY}, until asked to stop.

    @return: the demo's exit status.
    """
    while not _stopping:
        now = time.monotonic()
        for child in processes:
            if child.restartAt is not None:
                if now >= child.restartAt:
                    child.start()
                    assert child.process is not None
                    print(
                        f"started {child.name} again (pid {child.process.pid})",
                        flush=True,
                    )
                continue
            assert child.process is not None
            status = child.process.poll()
            if status is None or _stopping:
                continue
            if status > 0:
                print(
                    f"{child.name} failed (exit status {status}); see {child.log}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            print(
                f"{child.name} stopped; starting it again in {RESTART_DELAY:.0f} s",
                flush=True,
            )
            child.restartAt = now + RESTART_DELAY
        time.sleep(0.2)
    return 0


def main() -> int:
    """
    Start the demo and supervise it until Ctrl-C or SIGTERM.
    """
    taken = takenPorts()
    if taken:
        # Before anything starts: no banner, no pids, no half-started demo.
        print(
            "\n".join(f"cannot start the demo: {line}" for line in taken),
            file=sys.stderr,
        )
        return 1
    RUN.mkdir(mode=0o700, exist_ok=True)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    sys.path.insert(0, str(ROOT))
    from tlbalance._selfsigned import ensureSelfSigned
    from tlsession.daemonconfig import DaemonConfigError, readSecretFile

    ensureSelfSigned(str(RUN / "demo-cert.pem"), ["localhost", "127.0.0.1"])
    ensureSecret(RUN / "session-secret")
    try:
        readSecretFile(str(RUN / "session-secret"))
    except DaemonConfigError as e:
        print(f"cannot start the demo: {e}", file=sys.stderr)
        return 1

    processes = children()
    daemon = processes[0]
    try:
        daemon.start()
        if not waitForSocket(RUN / "sessions.sock", daemon):
            if _stopping:
                return 0
            print(
                f"the session daemon did not start; see {daemon.log}", file=sys.stderr
            )
            return 1
        for child in processes[1:]:
            child.start()
        _announce(processes)
        return supervise(processes)
    finally:
        for child in processes:
            child.stop()
        for child in processes:
            child.wait()


def _announce(processes: List[Child]) -> None:
    cookies = RUN / "cookies.txt"
    lines = [
        f"tlsuite demo running (logs in {RUN}/*.log):",
        f"  http://127.0.0.1:{HTTP}/    through tlbalance, plain",
        f"  https://127.0.0.1:{HTTPS}/   through tlbalance, TLS (self-signed)",
        "  try a few times (the cookie jar keeps your session):",
        f"    curl -s -b {cookies} -c {cookies} 'http://127.0.0.1:{HTTP}/?format=text'",
        f"  http://127.0.0.1:{HTTP}/cached   a page from each backend's render cache,",
        "    with a fragment refreshed in the background; X-Cache and Age say how",
        "    each answer was served:",
        f"    curl -si http://127.0.0.1:{HTTP}/cached | grep -i -e ^x-cache -e ^age",
        f"  http://127.0.0.1:{STATS}/   tlbalance's status page (kill a backend and",
        "    watch it go DOWN); /stats.json and /metrics (Prometheus) beside it",
        "processes (kill one and watch: it is started again 2 s later):",
    ]
    for child in processes:
        assert child.process is not None
        lines.append(f"  pid {child.process.pid:<7} {child.description}")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)


def _stop(signum: int, frame: object) -> None:
    global _stopping
    _stopping = True


if __name__ == "__main__":
    sys.exit(main())
