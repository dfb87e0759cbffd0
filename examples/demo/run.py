"""
C{make demo}: the balancer in front of two twisted.web backends, all local.

- tlbalance on http://127.0.0.1:8080 and https://127.0.0.1:8443 (a
  self-signed certificate is generated into C{run/} on first use);
- backend "A" on 127.0.0.1:8081 and backend "B" on the unix socket
  C{run/backend-b.sock}, both behind C{tlproxy:} so they see the real client
  address, which tlbalance sends them as a PROXY v2 header;
- health checks every 2 s: stop one backend and the balancer routes around it.

Everything runs as child processes of this script and stops with Ctrl-C
(or SIGTERM). The ports and the run directory can be moved with the
environment variables C{TLSUITE_DEMO_HTTP}, C{TLSUITE_DEMO_HTTPS},
C{TLSUITE_DEMO_BACKEND} and C{TLSUITE_DEMO_RUN} (the tests do).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUN = Path(os.environ.get("TLSUITE_DEMO_RUN", ROOT / "run"))
HTTP = int(os.environ.get("TLSUITE_DEMO_HTTP", "8080"))
HTTPS = int(os.environ.get("TLSUITE_DEMO_HTTPS", "8443"))
BACKEND = int(os.environ.get("TLSUITE_DEMO_BACKEND", "8081"))


def twistd(
    *args: str, name: str, env: dict[str, str] | None = None
) -> subprocess.Popen:
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
    signal.signal(signal.SIGTERM, _stop)
    sys.path.insert(0, str(ROOT))
    from tlbalance.tls import ensureSelfSigned

    certificate = RUN / "demo-cert.pem"
    ensureSelfSigned(str(certificate), ["localhost", "127.0.0.1"])
    socketB = RUN / "backend-b.sock"
    children = [
        twistd(
            "web",
            "--listen",
            f"tlproxy:tcp:{BACKEND}:interface=127.0.0.1",
            "--class",
            "examples.demo.backend.resource",
            name="backend-a",
            env={"TLSUITE_DEMO_NAME": f"A (tcp 127.0.0.1:{BACKEND})"},
        ),
        twistd(
            "web",
            "--listen",
            f"tlproxy:unix:{socketB}:mode=600",
            "--class",
            "examples.demo.backend.resource",
            name="backend-b",
            env={"TLSUITE_DEMO_NAME": f"B (unix {socketB.name})"},
        ),
        twistd(
            "tlbalance",
            "--listen",
            f"tcp:{HTTP}:interface=127.0.0.1",
            "--listen",
            f"ssl:{HTTPS}:interface=127.0.0.1:privateKey={certificate}",
            "--backend",
            f"tcp:host=127.0.0.1:port={BACKEND}",
            "--backend",
            f"unix:path={socketB}",
            "--send-proxy",
            "v2",
            "--check",
            "http GET / 200",
            name="tlbalance",
        ),
    ]
    print(
        f"tlsuite demo running (logs in {RUN}/*.log):\n"
        f"  http://127.0.0.1:{HTTP}/    through tlbalance, plain\n"
        f"  https://127.0.0.1:{HTTPS}/   through tlbalance, TLS (self-signed)\n"
        f"  try: curl -s 'http://127.0.0.1:{HTTP}/?format=text'\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        print(f"a demo process exited; see {RUN}/*.log", file=sys.stderr)
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


def _stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
