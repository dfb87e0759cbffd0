"""
Run testssl.sh's default checks against a tlbalance C{ssl:} listener on
127.0.0.1 (and, with C{--nginx}, against nginx configured with the same
protocols and suites, as a reference) and print a verdict summary: what
testssl rates above OK, and the lines about protocols, suites, forward
secrecy, cipher order, resumption and renegotiation.

A run takes about a minute per server. The summary of the last run is in
docs/balancer.md (section 8).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
from collections import Counter
from typing import Any, Dict, List, Sequence

from _harness import (
    LOOPBACK,
    BenchError,
    ProcessSet,
    findProgram,
    freePort,
    programVersion,
    runScript,
    waitForPort,
)
from balancer import startNginx
from tls import startTlbalance

from tlbalance._selfsigned import selfSignedPEM
from tlbalance.tls import DEFAULT_CIPHERS, TLS13_CIPHERSUITES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# testssl's severities, mildest first; everything above OK is reported.
SEVERITIES = ("DEBUG", "INFO", "OK", "LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN")
REPORTED = {"LOW", "MEDIUM", "HIGH", "CRITICAL", "WARN"}
# Findings about something else than the listener's TLS: the throwaway
# self-signed certificate of the run, the backend's HTTP answer, testssl's
# own OpenSSL.
NOT_THE_LISTENER = (
    "cert",
    "intermediate_cert",
    "OCSP",
    "DNS_CAArecord",
    "HSTS",
    "HPKP",
    "security_headers",
    "engine_problem",
)
# The lines the summary always shows, whatever their severity.
HEADLINES = (
    "SSLv2",
    "SSLv3",
    "TLS1",
    "TLS1_1",
    "TLS1_2",
    "TLS1_3",
    "cipherlist_NULL",
    "cipherlist_aNULL",
    "cipherlist_EXPORT",
    "cipherlist_LOW",
    "cipherlist_3DES_IDEA",
    "cipherlist_AVERAGE",
    "cipherlist_STRONG",
    "PFS",
    "PFS_ECDHE_curves",
    "FS",
    "FS_ECDHE_curves",
    "cipher_order",
    "TLS_session_ticket",
    "sessionresumption_ticket",
    "sessionresumption_ID",
    "secure_renego",
    "secure_client_renego",
    "TLS_extensions",
)


def nginxTLSConfig(directory: str, port: int, certificate: str) -> str:
    """
    nginx terminating TLS with tlbalance's default protocols and suites,
    Mozilla's way (no server order, a session cache, tickets on), answering
    every request itself.
    """
    temps = "\n".join(
        f"    {kind}_temp_path {directory}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
daemon off;
pid {directory}/nginx-tls.pid;
error_log {directory}/nginx-tls-error.log warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
{temps}
    server {{
        listen {LOOPBACK}:{port} ssl;
        ssl_certificate {certificate};
        ssl_certificate_key {certificate};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_ciphers {DEFAULT_CIPHERS};
        ssl_conf_command Ciphersuites {TLS13_CIPHERSUITES};
        ssl_prefer_server_ciphers off;
        ssl_session_cache shared:tls:1m;
        ssl_session_timeout 1h;
        location / {{
            default_type text/plain;
            return 200 "ok";
        }}
    }}
}}
"""


def runTestssl(
    processes: ProcessSet, name: str, port: int, timeout: float
) -> List[Dict[str, Any]]:
    """
    Run testssl.sh's default checks against C{LOOPBACK:port}.

    @return: its findings (the flat JSON format).
    """
    report = processes.path(f"testssl-{name}.json")
    argv = [
        findProgram("testssl"),
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
        "--openssl-timeout",
        "10",
        "--jsonfile",
        report,
        f"{LOOPBACK}:{port}",
    ]
    with open(processes.path(f"testssl-{name}.log"), "w") as log:
        try:
            subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env={**os.environ, "TMPDIR": processes.directory},
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise BenchError(f"testssl did not finish within {timeout:g} s") from e
    try:
        with open(report) as f:
            findings: List[Dict[str, Any]] = json.load(f)
    except (OSError, ValueError) as e:
        raise BenchError(f"testssl wrote no readable report: {e}") from e
    return findings


def _aboutTheListener(identifier: str) -> bool:
    return not identifier.startswith(NOT_THE_LISTENER)


def _findingLines(findings: Sequence[Dict[str, Any]]) -> List[str]:
    return [f"     {f['severity']:<8} {f['id']}: {f['finding']}" for f in findings] or [
        "     none"
    ]


def verdict(name: str, findings: Sequence[Dict[str, Any]]) -> List[str]:
    """
    The summary of one run: severity counts, the headline findings, every
    finding above OK (those about the listener apart from the others), and
    the simulated clients that could not connect.
    """
    counts = Counter(f["severity"] for f in findings)
    lines = [
        f"== testssl.sh verdict: {name} ==",
        "   severities: "
        + ", ".join(f"{s} {counts[s]}" for s in SEVERITIES if counts[s]),
    ]
    byId = {f["id"]: f for f in findings}
    for identifier in HEADLINES:
        finding = byId.get(identifier)
        if finding is not None:
            lines.append(
                f"   {identifier:<26} {finding['severity']:<8} {finding['finding']}"
            )
    reported = [f for f in findings if f["severity"] in REPORTED]
    lines.append("   above OK, about the listener:")
    lines += _findingLines([f for f in reported if _aboutTheListener(f["id"])])
    lines.append(
        "   above OK, about the test certificate, the backend's HTTP headers or "
        "testssl's own OpenSSL:"
    )
    lines += _findingLines([f for f in reported if not _aboutTheListener(f["id"])])
    simulated = [f for f in findings if f["id"].startswith("clientsimulation-")]
    refused = [
        f["id"].split("-", 1)[1] for f in simulated if f["finding"] == "No connection"
    ]
    lines.append(
        f"   simulated clients: {len(simulated) - len(refused)} of {len(simulated)} "
        f"connect; not: {', '.join(refused) or 'none'}"
    )
    return lines


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        description="testssl.sh against a tlbalance ssl: listener on 127.0.0.1."
    )
    parser.add_argument(
        "--python",
        default=os.path.join(ROOT, ".venv", "bin", "python"),
        help="interpreter that runs twistd tlbalance",
    )
    parser.add_argument(
        "--nginx",
        action="store_true",
        help="also run it against nginx with the same protocols and suites",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="seconds per testssl run (900)"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the findings here")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    options = parser.parse_args(argv)
    options.python = os.path.abspath(options.python)
    return options


def main(argv: Sequence[str]) -> int:
    """
    Run testssl against each target and print the verdicts.

    @return: 0 when it ran; errors raise L{BenchError}.
    """
    options = parseArguments(argv)
    print(f"{_testsslVersion()}; {programVersion([findProgram('nginx'), '-v'])}")
    results: Dict[str, List[Dict[str, Any]]] = {}
    with ProcessSet(prefix="bench-testssl-", keep=options.keep) as processes:
        certificate = processes.path("site.pem")
        with open(certificate, "wb") as f:
            f.write(selfSignedPEM(["localhost", LOOPBACK]))
        os.chmod(certificate, 0o644)
        direct, backends = startNginx(processes, None, {})
        target = startTlbalance(processes, None, options.python, certificate, backends)
        print(f"tlbalance: {target.note}, on {LOOPBACK}:{target.port}", flush=True)
        results["tlbalance"] = runTestssl(
            processes, "tlbalance", target.port, options.timeout
        )
        print("\n".join(verdict("tlbalance", results["tlbalance"])), flush=True)
        if options.nginx:
            port = freePort()
            config = processes.path("nginx-tls.conf")
            with open(config, "w") as f:
                f.write(nginxTLSConfig(processes.directory, port, certificate))
            nginx = processes.start(
                "nginx-tls",
                [findProgram("nginx"), "-p", processes.directory, "-c", config],
            )
            waitForPort(port, process=nginx)
            results["nginx"] = runTestssl(processes, "nginx", port, options.timeout)
            print("\n".join(verdict("nginx (reference)", results["nginx"])))
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def _testsslVersion() -> str:
    """
    testssl's version, from its banner.
    """
    banner = subprocess.run(
        [findProgram("testssl"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    ).stdout
    for line in banner.splitlines():
        if "testssl" in line and "from" in line:
            return " ".join(re.sub(r"\x1b\[[0-9;]*m", " ", line).split())
    return "unknown"


if __name__ == "__main__":
    runScript(main, "testssl.py")
