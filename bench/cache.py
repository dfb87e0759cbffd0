"""
Benchmark tlcache's render cache: the same 100-row page served by
twisted.web's static.Data, by a cached page, rendered per request (by
tlcache.nevow and by twisted.web.template), and with a slow fragment in it;
print req/s, latencies and the ratios against the targets.

Run C{python bench/cache.py --help} for the options; bench/README.md says
what each figure means.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import attrs
from _cachesite import FRAGMENT_DELAY, fragmentPageBytes, headlinesBytes
from _harness import (
    LOOPBACK,
    BenchError,
    ManagedProcess,
    MeasuredRun,
    ProcessSet,
    cpuSeconds,
    findProgram,
    freePort,
    loadAverage,
    machineDescription,
    programVersion,
    pythonDescription,
    runScript,
    runWrk,
    targetLines,
    waitForPort,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = os.path.join(ROOT, "bench", "_cachesite.py")

# Targets set by the issue.
CACHED_VS_STATIC = 0.9
CACHED_VS_UNCACHED = 30.0
FRAGMENT_P99_LIMIT = 2.0
# Share of the machine other processes may use before a table is flagged.
NOISY = 0.10

PAGES = {
    "static": "twisted.web static.Data holding the page's bytes (the ceiling)",
    "cached": "CachedPage + tlcache.nevow page, every request a hit",
    "uncached": "the same tlcache.nevow page rendered for every request",
    "uncached-twisted": "the same table by twisted.web.template renderElement"
    " for every request",
    "fragment": "CachedPage (1 s fresh, 60 s grace) holding a fragment that"
    f" takes {FRAGMENT_DELAY * 1000:g} ms to render, refreshed every 10 s",
}


# Talking to the site


@attrs.frozen
class Response:
    """
    One answer from the site.
    """

    status: int
    headers: Dict[str, str]
    body: bytes


def fetch(port: int, path: str, timeout: float = 10.0) -> Response:
    """
    One GET through C{http.client} (which undoes chunked encoding, as
    twisted.web.template's responses use it).

    @raise BenchError: when the site does not answer.
    """
    connection = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        connection.request("GET", path)
        answer = connection.getresponse()
        body = answer.read()
        headers = {name.lower(): value for name, value in answer.getheaders()}
        return Response(answer.status, headers, body)
    except (OSError, http.client.HTTPException) as e:
        raise BenchError(f"GET {path} failed: {e}") from e
    finally:
        connection.close()


def siteStats(port: int) -> Dict[str, Dict[str, int]]:
    """
    The site's cache counters (see C{_cachesite.Stats}).
    """
    answer = fetch(port, "/stats")
    if answer.status != 200:
        raise BenchError(f"/stats gave {answer.status}")
    stats: Dict[str, Dict[str, int]] = json.loads(answer.body)
    return stats


def _firstDifference(a: bytes, b: bytes) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return (
        f"{len(a)} vs {len(b)} bytes, first difference at byte {at}:\n"
        f"  {a[max(0, at - 40) : at + 60]!r}\n  {b[max(0, at - 40) : at + 60]!r}"
    )


def checkSite(port: int, pages: Sequence[str]) -> int:
    """
    Fetch every page and insist on the same bytes: the cached and both
    uncached pages exactly the static page's, the fragment page the same
    with the fragment's bytes in it. Also check the cache answers a second
    request itself, and the first render of the fragment page is done, so
    the measured requests find it.

    @return: the size of the page in bytes.
    @raise BenchError: on any difference.
    """
    static = fetch(port, "/static")
    if static.status != 200 or b"&lt;0&gt; &amp; co" not in static.body:
        raise BenchError(f"/static gave {static.status}: {static.body[:200]!r}")
    contentType = static.headers.get("content-type")
    for page in pages:
        if page == "static":
            continue
        expected = static.body
        if page == "fragment":
            expected = fragmentPageBytes(static.body)
        # Twice: a cold cache and a warm one must both be right.
        for attempt in ("first", "second"):
            answer = fetch(port, "/" + page)
            if answer.status != 200:
                raise BenchError(f"/{page} gave {answer.status} ({attempt} GET)")
            if answer.body != expected:
                raise BenchError(
                    f"/{page} is not the same page as /static ({attempt} GET): "
                    + _firstDifference(answer.body, expected)
                )
            if answer.headers.get("content-type") != contentType:
                raise BenchError(
                    f"/{page} says Content-Type {answer.headers.get('content-type')}"
                    f", /static {contentType}"
                )
    if "fragment" in pages and headlinesBytes() not in fetch(port, "/fragment").body:
        raise BenchError("/fragment does not hold the fragment's bytes")
    stats = siteStats(port)
    for page, counters in (("cached", "cached"), ("fragment", "fragmentPage")):
        answered = stats[counters]["hits"] + stats[counters]["staleHits"]
        if page in pages and not answered:
            raise BenchError(f"/{page} was never answered from the cache: {stats}")
    return len(static.body)


# Running


def interpreterCheck(python: str) -> None:
    """
    @raise BenchError: when C{python} cannot import what the site needs.
    """
    done = subprocess.run(
        [python, "-c", "import tlcache.page, tlcache.fragment, twisted.web.template"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=siteEnvironment(),
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise BenchError(
            f"{python} cannot run the site: {lines[-1] if lines else done.returncode}"
        )


def siteEnvironment() -> Dict[str, str]:
    """
    The environment of the site process: this one, with the checkout first
    on the path (the script's own directory would be otherwise).
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH", "")) if p
    )
    return env


def startSite(
    processes: ProcessSet, options: argparse.Namespace
) -> Tuple[ManagedProcess, int]:
    """
    Start the site process on C{options.site_cpus}, wait until it listens.

    @return: the process and its port.
    """
    port = freePort()
    logPath = processes.path("site-twisted.log")
    argv = [options.python, SITE, "--port", str(port), "--logfile", logPath]
    if options.access_log:
        argv.append("--access-log")
    site = processes.start(
        "site",
        argv,
        cpus=options.site_cpus,
        cwd=ROOT,
        env=siteEnvironment(),
        otherLogs=[logPath],
    )
    waitForPort(port, process=site, timeout=60)
    return site, port


def waitIdle(
    process: ManagedProcess, interval: float = 0.1, timeout: float = 10.0
) -> None:
    """
    Wait until C{process} uses less than 5% of a CPU over C{interval}.

    @raise BenchError: when it is still busy after C{timeout} seconds.
    """
    deadline = time.monotonic() + timeout
    last = cpuSeconds(process.pid)
    while True:
        time.sleep(interval)
        now = cpuSeconds(process.pid)
        if now - last < interval * 0.05:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{process.name} is still busy after {timeout} s")
        last = now


def measurePages(
    processes: ProcessSet,
    site: ManagedProcess,
    port: int,
    options: argparse.Namespace,
) -> Dict[str, List[MeasuredRun]]:
    """
    Warm every page up, then run wrk against them in turn, C{options.runs}
    times.

    @return: the runs of each page.
    """

    def measure(page: str, seconds: int) -> MeasuredRun:
        for process in processes.processes:
            process.check()
        # The requests of the last run that the site had read but not yet
        # answered when wrk stopped (after the twisted.web.template page, 50
        # renders: 100 ms of CPU) must not be charged to this run.
        waitIdle(site)
        return runWrk(
            f"http://{LOOPBACK}:{port}/{page}",
            seconds,
            options.connections,
            cpus=options.client_cpus,
            observe=site.pid,
            ownGroups=[p.pid for p in processes.processes],
        )

    for page in options.pages:
        measure(page, options.warmup)
    runs: Dict[str, List[MeasuredRun]] = {page: [] for page in options.pages}
    # Round after round over the pages, so that drift of the machine hits
    # every page alike.
    for _ in range(options.runs):
        for page in options.pages:
            runs[page].append(measure(page, options.duration))
    return runs


# Figures


def summarize(runs: Sequence[MeasuredRun]) -> Dict[str, Any]:
    """
    Median figures over the runs of one page, and the spread of its
    throughput, (max - min) / median.
    """
    rates = [r.wrk.requestsPerSecond for r in runs]
    rps = statistics.median(rates)
    cpu = [r.cpuMicrosPerRequest for r in runs if r.cpuMicrosPerRequest is not None]
    return {
        "rps": rps,
        "p50_ms": statistics.median(r.wrk.p50 for r in runs) / 1e3,
        "p99_ms": statistics.median(r.wrk.p99 for r in runs) / 1e3,
        "max_ms": max(r.wrk.maxLatency for r in runs) / 1e3,
        "cpu_us_per_req": statistics.median(cpu) if cpu else None,
        "spread": (max(rates) - min(rates)) / rps if rps else 0.0,
        "errors": sum(r.wrk.errorCount for r in runs),
        "others": max((r.foreign for r in runs if r.foreign is not None), default=0.0),
        "requests": sum(r.wrk.requests for r in runs),
    }


def _fmt(value: Optional[float], spec: str) -> str:
    return "-" if value is None else format(value, spec)


def formatTable(
    summaries: Dict[str, Dict[str, Any]], options: argparse.Namespace
) -> str:
    """
    One row per page: req/s, times static, latencies, the site's CPU per
    request, spread, errors, other processes' share.
    """
    header = (
        f"{'page':<17} {'req/s':>9} {'xstatic':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'CPU us/req':>10} {'spread':>7} {'errors':>6} {'others':>6}"
    )
    static = summaries.get("static")
    lines = [
        f"== {len(summaries)} pages, wrk -t1 "
        f"-c{options.connections} keep-alive; median of {options.runs} x "
        f"{options.duration} s ==",
        header,
        "-" * len(header),
    ]
    for page, s in summaries.items():
        ratio = s["rps"] / static["rps"] if static and static["rps"] else None
        lines.append(
            f"{page:<17} {s['rps']:>9.0f} {_fmt(ratio, '.2f'):>8} "
            f"{s['p50_ms']:>8.2f} {s['p99_ms']:>8.2f} {s['max_ms']:>8.1f} "
            f"{_fmt(s['cpu_us_per_req'], '.1f'):>10} {s['spread'] * 100:>6.1f}% "
            f"{s['errors']:>6} {s['others'] * 100:>5.0f}%"
        )
    others = max((s["others"] for s in summaries.values()), default=0.0)
    if others > NOISY:
        lines.append(
            f"   NOTE: other processes used up to {others * 100:.0f}% of the machine"
            " during these runs; the figures are noisy"
        )
    if any(s["errors"] for s in summaries.values()):
        lines.append("   NOTE: wrk counted errors; see the errors column")
    return "\n".join(lines)


def evaluateTargets(summaries: Dict[str, Dict[str, Any]]) -> List[Dict[str, Any]]:
    """
    The issue's targets, each with the measured value and PASS or MISS.
    """
    checks: List[Dict[str, Any]] = []
    cached = summaries.get("cached")
    if cached is None:
        return checks

    def add(what: str, value: float, goal: str, passed: bool) -> None:
        checks.append({"what": what, "value": value, "goal": goal, "pass": passed})

    if "static" in summaries:
        ratio = cached["rps"] / summaries["static"]["rps"]
        add(
            "cached req/s / static req/s",
            ratio,
            f">= {CACHED_VS_STATIC:g}",
            ratio >= CACHED_VS_STATIC,
        )
    for page in ("uncached", "uncached-twisted"):
        if page in summaries:
            ratio = cached["rps"] / summaries[page]["rps"]
            add(
                f"cached req/s / {page} req/s",
                ratio,
                f">= {CACHED_VS_UNCACHED:g}",
                ratio >= CACHED_VS_UNCACHED,
            )
    if "fragment" in summaries and cached["p99_ms"]:
        ratio = summaries["fragment"]["p99_ms"] / cached["p99_ms"]
        add(
            "fragment p99 / cached p99",
            ratio,
            f"<= {FRAGMENT_P99_LIMIT:g}",
            ratio <= FRAGMENT_P99_LIMIT,
        )
    return checks


def formatTargets(
    checks: List[Dict[str, Any]], summaries: Dict[str, Dict[str, Any]]
) -> str:
    """
    The PASS/MISS list, and the bound the 30x target has on this machine.
    """
    lines = targetLines(checks, "targets", "the cached page was not measured", 40)
    static = summaries.get("static")
    for page in ("uncached", "uncached-twisted"):
        if static and page in summaries:
            lines.append(
                f"   bound: static / {page} = "
                f"{static['rps'] / summaries[page]['rps']:.1f}x (no cache can"
                " beat the static page)"
            )
    return "\n".join(lines)


def fragmentReport(
    before: Dict[str, Dict[str, int]], after: Dict[str, Dict[str, int]]
) -> Tuple[str, Dict[str, int]]:
    """
    What the measured load did to the fragment page's caches: requests that
    had to wait for a render of the page or of the fragment (both should be
    none), background refreshes.
    """

    def delta(source: str, name: str) -> int:
        return after[source][name] - before[source][name]

    figures = {
        "page_hits": delta("fragmentPage", "hits"),
        "page_stale_hits": delta("fragmentPage", "staleHits"),
        "page_misses": delta("fragmentPage", "misses"),
        "page_refreshes": delta("fragmentPage", "refreshes"),
        "fragment_misses": delta("fragments", "misses"),
        "fragment_refreshes": delta("fragments", "refreshes"),
        "fragment_refresh_failures": delta("fragments", "refreshFailures"),
    }
    waited = figures["page_misses"] + figures["fragment_misses"]
    text = (
        f"== fragment page, from the first warm-up to the last run ==\n"
        f"   page: {figures['page_hits']} fresh hits, {figures['page_stale_hits']}"
        f" stale hits, {figures['page_refreshes']} background renders,"
        f" {figures['page_misses']} misses\n"
        f"   fragment: {figures['fragment_refreshes']} background refreshes,"
        f" {figures['fragment_misses']} misses,"
        f" {figures['fragment_refresh_failures']} failed refreshes\n"
        f"   requests that waited for a render: {waited}"
        f" {'(none, as it should be)' if waited == 0 else '(SHOULD BE NONE)'}"
    )
    return text, figures


# Main


def parseArguments(argv: Sequence[str]) -> argparse.Namespace:
    """
    The command line.
    """
    parser = argparse.ArgumentParser(
        description="The render cache against static.Data and uncached renders."
    )
    parser.add_argument(
        "--python",
        default=os.path.join(ROOT, ".venv", "bin", "python"),
        help="interpreter that runs the site; e.g. .venv-pypy/bin/python",
    )
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds per measured run (5)"
    )
    parser.add_argument(
        "--runs", type=int, default=3, help="runs per page, interleaved; median (3)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=None,
        help="seconds of warm-up load per page (2; 5 on PyPy)",
    )
    parser.add_argument(
        "--connections", type=int, default=50, help="wrk connections (50)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 run of 2 s per page"
    )
    parser.add_argument(
        "--pages", default=",".join(PAGES), help="comma-separated subset of the pages"
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="let the site log a line per request (twisted.web's default)",
    )
    parser.add_argument(
        "--site-cpus", default="0", help="taskset list for the site (0)"
    )
    parser.add_argument("--client-cpus", default="1", help="taskset list for wrk (1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin anything")
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs)"
    )
    options = parser.parse_args(argv)
    if options.quick:
        options.duration, options.runs = 2, 1
        options.warmup = 1 if options.warmup is None else options.warmup
    options.python = os.path.abspath(options.python)
    if options.no_pin:
        options.site_cpus = options.client_cpus = None
    pages = [p for p in options.pages.split(",") if p]
    for page in pages:
        if page not in PAGES:
            parser.error(f"unknown page {page}")
    # Always in the same order, static first.
    options.pages = [p for p in PAGES if p in pages]
    if options.duration < 1 or options.runs < 1 or options.connections < 1:
        parser.error("--duration, --runs and --connections must be positive")
    return options


def describe(
    options: argparse.Namespace, interpreter: Dict[str, str], size: int
) -> List[str]:
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
        if not options.site_cpus
        else f"site on CPU {options.site_cpus}, wrk on CPU {options.client_cpus}"
    )
    return [
        "render cache benchmark",
        f"  machine   {machine['cpu']}, {machine['cores']} cores, kernel "
        f"{machine['kernel']}, frequency governor {machine['governor']}",
        f"  site      {implementation}, Twisted {interpreter['twisted']}, epoll "
        f"reactor, access log {'on' if options.access_log else 'off'}",
        f"  page      100-row table, {size} bytes",
        f"  client    {programVersion([findProgram('wrk'), '--version'])}",
        f"  pinning   {pinning}",
        f"  load avg  {loadAverage()} at start",
        f"  runs      {options.runs} x {options.duration} s per page, interleaved, "
        f"after {options.warmup} s warm-up each; figures are medians",
    ]


def main(argv: Sequence[str]) -> int:
    """
    Run the benchmark and print the report.

    @return: the exit status: 0 when it ran (targets met or not); errors
        raise L{BenchError}.
    """
    options = parseArguments(argv)
    if options.site_cpus and (os.cpu_count() or 1) < 2:
        print("  NOTE: fewer than 2 CPUs: nothing is pinned")
        options.site_cpus = options.client_cpus = None
    interpreter = pythonDescription(options.python)
    interpreterCheck(options.python)
    if options.warmup is None:
        options.warmup = 5 if interpreter["pypy"] else 2
    findProgram("wrk")
    results: Dict[str, Any] = {"options": vars(options)}
    with ProcessSet(prefix="bench-cache-", keep=options.keep) as processes:
        site, port = startSite(processes, options)
        size = checkSite(port, options.pages)
        report = describe(options, interpreter, size)
        print("\n".join(report))
        for page in options.pages:
            print(f"  {page:<17} {PAGES[page]}")
        if options.keep:
            print(f"  logs in {processes.directory}")
        print(flush=True)
        results["machine"] = report
        before = siteStats(port)
        runs = measurePages(processes, site, port, options)
        after = siteStats(port)
        site.check()
    summaries = {page: summarize(r) for page, r in runs.items()}
    print(formatTable(summaries, options) + "\n")
    if "fragment" in options.pages:
        text, results["fragment_page"] = fragmentReport(before, after)
        print(text + "\n")
    checks = evaluateTargets(summaries)
    print(formatTargets(checks, summaries), flush=True)
    results["summary"] = summaries
    results["runs"] = {
        page: [
            {**attrs.asdict(r.wrk), "cpu_seconds": r.cpuSeconds, "others": r.foreign}
            for r in rs
        ]
        for page, rs in runs.items()
    }
    results["site_stats"] = after
    results["targets"] = checks
    if options.json:
        with open(options.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    runScript(main, "cache.py")
