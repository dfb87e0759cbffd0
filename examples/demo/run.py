"""
C{make demo}: the balancer in front of two twisted.web backends, all local.

- tlbalance on http://127.0.0.1:8080 and https://127.0.0.1:8443 (a
  self-signed certificate is generated into C{run/} on first use);
- backend "A" on 127.0.0.1:8081 and backend "B" on the unix socket
  C{run/backend-b.sock}, both behind C{tlproxy:} so they see the real client
  address, which tlbalance sends them as a PROXY v2 header;
- health checks every 2 s: stop one backend and the balancer routes around it.

Everything runs as child processes of this script and stops with Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "run"


def twistd(*args: str, name: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """
    Start C{twistd -n} with C{args} in the foreground, logging to stdout.
    """
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    command += ["-n", "--pidfile="]
    command += ["--logfile", str(RUN / f"{name}.log"), *args]
    environment = dict(os.environ, **(env or {}))
    environment["PYTHONPATH"] = str(ROOT)
    return subprocess.Popen(command, cwd=ROOT, env=environment)


def main() -> int:
    """
    Start the demo and wait for Ctrl-C.
    """
    RUN.mkdir(exist_ok=True)
    sys.path.insert(0, str(ROOT))
    from tlbalance.tls import ensureSelfSigned

    certificate = RUN / "demo-cert.pem"
    ensureSelfSigned(str(certificate), ["localhost", "127.0.0.1"])
    socketB = RUN / "backend-b.sock"
    children = [
        twistd(
            "web", "--listen", "tlproxy:tcp:8081:interface=127.0.0.1",
            "--class", "examples.demo.backend.resource",
            name="backend-a", env={"TLSUITE_DEMO_NAME": "A (tcp 127.0.0.1:8081)"},
        ),
        twistd(
            "web", "--listen", f"tlproxy:unix:{socketB}:mode=600",
            "--class", "examples.demo.backend.resource",
            name="backend-b", env={"TLSUITE_DEMO_NAME": f"B (unix {socketB.name})"},
        ),
        twistd(
            "tlbalance",
            "--listen", "tcp:8080:interface=127.0.0.1",
            "--listen", f"ssl:8443:interface=127.0.0.1:privateKey={certificate}",
            "--backend", "tcp:host=127.0.0.1:port=8081",
            "--backend", f"unix:path={socketB}",
            "--send-proxy", "v2",
            "--check", "http GET / 200",
            name="tlbalance",
        ),
    ]
    print(
        "tlsuite demo running (logs in run/*.log):\n"
        "  http://127.0.0.1:8080/    through tlbalance, plain\n"
        "  https://127.0.0.1:8443/   through tlbalance, TLS (self-signed)\n"
        "  try: curl -s 'http://127.0.0.1:8080/?format=text'\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print("a demo process exited; see run/*.log", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


if __name__ == "__main__":
    sys.exit(main())
