"""
C{make demo} works: the demo script's balancer answers over HTTP and HTTPS
from both backends, each reporting the real client address; the visit count
of a browser's session goes on whichever backend answers, because both keep
their sessions in the demo's session daemon; the cached page is served from
each backend's render cache, with a fragment refreshed in the background;
killed processes come back; and everything stops cleanly on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from twisted.trial.unittest import TestCase

from tests.integration._support import (
    CHECKOUT,
    TWISTD,
    Address,
    PeerProcess,
    accepts,
    freePort,
    startPeer,
    temporaryDirectory,
)

ROOT = Path(__file__).resolve().parents[2]


class Browser:
    """
    An HTTP client that keeps cookies like a browser and trusts the demo's
    self-signed certificate.
    """

    def __init__(self) -> None:
        self.jar = CookieJar()
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar),
            urllib.request.HTTPSHandler(context=context),
        )

    def get(self, url: str) -> Tuple[int, Dict[str, str], str]:
        """
        GET C{url}: the status, the headers (lower-case names, repeated ones
        joined with newlines) and the body.
        """
        return self.open(url, None)

    def post(self, url: str, **form: str) -> Tuple[int, Dict[str, str], str]:
        """
        POST C{form} to C{url} and follow the redirect, as L{get} does.
        """
        return self.open(url, urllib.parse.urlencode(form).encode("ascii"))

    def open(self, url: str, data: Optional[bytes]) -> Tuple[int, Dict[str, str], str]:
        """
        GET C{url}, or POST C{data} to it, as L{get} describes.
        """
        try:
            response = self.opener.open(url, data, timeout=10)
        except urllib.error.HTTPError as error:
            response = error
        with response:
            headers: Dict[str, str] = {}
            for name, value in response.headers.items():
                key = name.lower()
                headers[key] = f"{headers[key]}\n{value}" if key in headers else value
            return response.status, headers, response.read().decode("utf-8")

    def cookie(self, name: str) -> Optional[str]:
        """
        The value of the cookie C{name} in the jar.
        """
        for cookie in self.jar:
            if cookie.name == name:
                return cookie.value
        return None


def fields(line: str) -> Dict[str, str]:
    """
    The C{key=value} fields of a C{?format=text} answer.
    """
    return dict(field.split("=", 1) for field in line.split())


def dataAttributes(page: str) -> Dict[str, str]:
    """
    The C{data-*} attributes of the cached page, by name without C{data-}
    (the page uses each name once).
    """
    found = re.findall(r'\sdata-([a-z-]+)="([^"]*)"', page)
    names = [name for name, _ in found]
    assert len(names) == len(set(names)), names
    return dict(found)


class DemoTests(TestCase):
    """
    The demo, run as C{make demo} runs it, on free ports.
    """

    def startDemo(self, **settings: str) -> None:
        """
        Start the demo in its own process session (so that every process it
        starts can be found, and killed if the test fails), and wait until
        it listens.

        @param settings: more environment variables for the demo.
        """
        self.runDirectory = Path(temporaryDirectory(self)) / "run"
        self.http, self.https = freePort(), freePort()
        self.backend = backend = freePort()
        self.stats = freePort()
        environment = dict(
            os.environ,
            TLSUITE_DEMO_RUN=str(self.runDirectory),
            TLSUITE_DEMO_HTTP=str(self.http),
            TLSUITE_DEMO_HTTPS=str(self.https),
            TLSUITE_DEMO_BACKEND=str(backend),
            TLSUITE_DEMO_STATS=str(self.stats),
            **settings,
        )
        self.demo = subprocess.Popen(
            [sys.executable, "examples/demo/run.py"],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

        def killAll() -> None:
            if self.demo.poll() is None:
                os.killpg(self.demo.pid, signal.SIGKILL)
                self.demo.wait()

        self.addCleanup(killAll)
        for port in (self.http, self.https, backend, self.stats):
            self.waitFor(port)

    def waitFor(self, port: int) -> None:
        """
        Wait until C{port} accepts connections (at most 30 s).
        """
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            self.assertIsNone(self.demo.poll(), "the demo exited early")
            if accepts(("127.0.0.1", port)):
                return
            time.sleep(0.2)
        self.fail(f"nothing listened on port {port}")

    def url(self, secure: bool = False, text: bool = True) -> str:
        """
        The demo page through the balancer.
        """
        if secure:
            base = f"https://127.0.0.1:{self.https}/"
        else:
            base = f"http://127.0.0.1:{self.http}/"
        return base + ("?format=text" if text else "")

    def waitForBothBackends(self) -> None:
        """
        Wait until the balancer sends requests to both backends (backend B
        is used once its health check has passed), with requests that carry
        no cookie.
        """
        seen: set[str] = set()
        deadline = time.monotonic() + 30
        while len(seen) < 2 and time.monotonic() < deadline:
            try:
                status, _, body = Browser().get(self.url())
            except OSError:
                # Still starting: the balancer may have had no backend
                # ready to connect to yet, and closed the connection.
                status = 0
            if status == 200:
                seen.add(fields(body)["backend"])
            time.sleep(0.1)
        self.assertEqual(seen, {"A", "B"})

    def visit(self, browser: Browser, count: int) -> List[Dict[str, str]]:
        """
        Make C{count} requests with C{browser}; each must succeed.
        """
        answers = []
        for _ in range(count):
            status, _, body = browser.get(self.url())
            self.assertEqual(status, 200, body)
            answers.append(fields(body))
        return answers

    def processesLeft(self) -> str:
        """
        The processes of the demo's session still running.
        """
        return subprocess.run(
            ["pgrep", "-s", str(self.demo.pid)], capture_output=True, text=True
        ).stdout.strip()

    def childPID(self, name: str) -> int:
        """
        The pid of the demo's child process C{name} (it logs to C{name}.log).
        """
        found = subprocess.run(
            [
                "pgrep",
                "-s",
                str(self.demo.pid),
                "-f",
                f"{self.runDirectory}/{name}.log",
            ],
            capture_output=True,
            text=True,
        ).stdout.split()
        self.assertEqual(len(found), 1, f"{name}: {found}")
        return int(found[0])

    def kill(self, name: str, address: Address) -> None:
        """
        SIGKILL the demo's child C{name} and wait until C{address}, where it
        listened, refuses connections: a connection the balancer made to a
        dying backend just before would be reset, as a real client's is.
        """
        os.kill(self.childPID(name), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while accepts(address):
            self.assertLess(time.monotonic(), deadline, f"{name} still listens")
            time.sleep(0.05)

    def stopDemo(self) -> None:
        """
        SIGTERM stops the demo, with status 0 and no process left behind.
        """
        self.demo.send_signal(signal.SIGTERM)
        self.assertEqual(self.demo.wait(timeout=30), 0)
        self.assertEqual(self.processesLeft(), "", "demo processes left running")

    def test_sessionSharedByBothBackends(self) -> None:
        """
        A browser's ten requests through the balancer are answered by both
        backends, with the visit count going 1 to 10 without a gap or a
        repeat; the page shows the start of the session identifier, never
        all of it, and the client's own address. Over HTTPS the session is a
        separate one with a C{Secure} C{__Host-} cookie, and the plain one
        goes on untouched. The secret the demo made is private. SIGTERM
        stops every process.
        """
        self.startDemo()
        secret = self.runDirectory / "session-secret"
        self.assertEqual(stat.S_IMODE(secret.stat().st_mode), 0o600)
        self.assertEqual(len(secret.read_text().strip()), 43)
        self.waitForBothBackends()

        browser = Browser()
        answers = self.visit(browser, 10)
        self.assertEqual([int(a["visits"]) for a in answers], list(range(1, 11)))
        self.assertEqual({a["backend"] for a in answers}, {"A", "B"})
        sessionID = browser.cookie("TLSESSION")
        assert sessionID is not None
        self.assertEqual(len(sessionID), 43)
        self.assertEqual(answers[0]["session"], "new")
        for answer in answers[1:]:
            self.assertEqual(answer["session"], sessionID[:6])
            self.assertTrue(answer["client"].startswith("127.0.0.1:"), answer)
        status, headers, page = browser.get(self.url(text=False))
        self.assertEqual(status, 200)
        self.assertIn("Visit 11, answered by backend", page)
        self.assertIn(f"<code>{sessionID[:6]}</code>", page)
        self.assertNotIn(sessionID, page)
        self.assertIn("Client address as this backend sees it: <b>127.0.0.1:", page)

        status, headers, page = browser.get(self.url(secure=True, text=False))
        self.assertEqual(status, 200)
        self.assertIn("Visit 1, answered by backend", page)
        self.assertIn("Client address as this backend sees it: <b>127.0.0.1:", page)
        cookie = headers["set-cookie"]
        self.assertTrue(cookie.startswith("__Host-TLSESSION="), cookie)
        for flag in ("Secure", "HttpOnly", "SameSite=lax", "Path=/"):
            self.assertIn(flag, cookie.split("; "))
        self.assertEqual(fields(browser.get(self.url(secure=True))[2])["visits"], "2")
        self.assertEqual(self.visit(browser, 1)[0]["visits"], "12")

        # The balancer's status page counts what went through it.
        status, _, page = Browser().get(f"http://127.0.0.1:{self.stats}/")
        self.assertEqual(status, 200)
        self.assertIn("<title>tlbalance status</title>", page)
        stats = json.loads(
            Browser().get(f"http://127.0.0.1:{self.stats}/stats.json")[2]
        )
        self.assertEqual([b["state"] for b in stats["backends"]], ["UP", "UP"])
        self.assertGreaterEqual(sum(b["total"] for b in stats["backends"]), 14)

        self.stopDemo()

    def test_killedProcessesComeBack(self) -> None:
        """
        Kill backend A and the other one answers with the count going on;
        kill the session daemon and pages answer 503 with C{Retry-After}
        until the demo has started it again, when the browser gets a new
        session (the daemon keeps sessions in memory only).
        """
        self.startDemo()
        self.waitForBothBackends()
        browser = Browser()
        self.visit(browser, 2)

        self.kill("backend-a", ("127.0.0.1", self.backend))
        answers = self.visit(browser, 3)
        self.assertEqual([a["visits"] for a in answers], ["3", "4", "5"])
        self.assertEqual({a["backend"] for a in answers}, {"B"})
        oldID = browser.cookie("TLSESSION")

        self.kill("tlsession", str(self.runDirectory / "sessions.sock"))
        statuses = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status, headers, body = browser.get(self.url())
            statuses.append(status)
            if status == 200:
                break
            self.assertEqual(status, 503, body)
            self.assertEqual(headers["retry-after"], "5")
            time.sleep(0.2)
        self.assertEqual(statuses[0], 503)
        self.assertEqual(statuses[-1], 200)
        self.assertEqual(fields(body)["visits"], "1")
        self.assertNotEqual(browser.cookie("TLSESSION"), oldID)
        self.assertEqual(self.visit(browser, 1)[0]["visits"], "2")

        self.stopDemo()

    def test_portTakenStopsBeforeAnythingStarts(self) -> None:
        """
        With one of its ports held by another process, the demo says which
        one and how to choose another, exits 1, and starts nothing (no
        banner, no run directory).
        """
        holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        taken = holder.getsockname()[1]
        runDirectory = Path(temporaryDirectory(self)) / "run"
        result = subprocess.run(
            [sys.executable, "examples/demo/run.py"],
            cwd=ROOT,
            env=dict(
                os.environ,
                TLSUITE_DEMO_RUN=str(runDirectory),
                TLSUITE_DEMO_HTTP=str(freePort()),
                TLSUITE_DEMO_HTTPS=str(taken),
                TLSUITE_DEMO_BACKEND=str(freePort()),
                TLSUITE_DEMO_STATS=str(freePort()),
            ),
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertEqual(result.stdout, "")
        self.assertIn(f"port {taken} (tlbalance, TLS)", result.stderr)
        self.assertIn(f"TLSUITE_DEMO_HTTPS={taken + 1000} make demo", result.stderr)
        self.assertFalse(runDirectory.exists())

    def cachedURL(self, query: str = "") -> str:
        """
        The cached page through the balancer.
        """
        return f"http://127.0.0.1:{self.http}/cached" + query

    def test_cachedPage(self) -> None:
        """
        The cached page, linked from the visit page, is rendered once by
        each backend and then served from its render cache: a second request
        to the same backend gets the same bytes (the same render time), with
        C{X-Cache: HIT} and its C{Last-Modified}, even though the browser sends
        the visit page's session cookie. It sets no cookie, and says what
        the headers mean. The first render of each backend waited for the
        fragment's first render.
        """
        # Long enough that no request of this test finds its copy stale.
        self.startDemo(TLSUITE_DEMO_CACHE_TIMEOUT="120")
        self.waitForBothBackends()
        browser = Browser()
        status, _, visit = browser.get(self.url(text=False))
        self.assertEqual(status, 200)
        self.assertIn('<a href="/cached">', visit)
        self.assertIsNotNone(browser.cookie("TLSESSION"))

        first: Dict[str, str] = {}
        for _ in range(6):
            status, headers, page = browser.get(self.cachedURL())
            self.assertEqual(status, 200, page)
            self.assertNotIn("set-cookie", headers)
            backend = dataAttributes(page)["backend"]
            if backend in first:
                break
            self.assertEqual(headers["x-cache"], "MISS")
            facts = dataAttributes(page)
            self.assertEqual(facts["fragment-waited"], "yes")
            self.assertEqual(facts["fragment-render"], "1")
            first[backend] = page
        else:
            self.fail(f"no two answers from one backend: {sorted(first)}")

        self.assertEqual(headers["x-cache"], "HIT")
        self.assertIn("last-modified", headers)
        self.assertIn("etag", headers)
        self.assertEqual(page, first[backend])
        facts = dataAttributes(page)
        self.assertEqual(
            facts["rendered-at"], dataAttributes(first[backend])["rendered-at"]
        )
        self.assertIn(f"rendered by backend {backend}", page)
        self.assertIn("<code>Last-Modified</code>", page)
        self.assertIn("<code>Age</code>", page)
        self.assertIn("<code>X-Cache</code>", page)
        self.assertIn('<a href="/">', page)

        self.stopDemo()

    def test_fragmentRefreshedInBackground(self) -> None:
        """
        The cached page's fragment is rendered again in the background: on
        fresh renders of the page (each with a query string of its own, so
        a key of its own), the fragment's render time changes once the
        refresh interval has passed; only each backend's first page render
        waited for the fragment; pages are rendered, with the fragment's
        previous bytes, while a refresh is running.
        """
        self.startDemo(TLSUITE_DEMO_REFRESH="1")
        self.waitForBothBackends()
        browser = Browser()
        seen: Dict[str, List[Dict[str, str]]] = {}
        changed = servedDuringRefresh = False
        poll = 0
        deadline = time.monotonic() + 30
        while not (changed and servedDuringRefresh):
            self.assertLess(
                time.monotonic(),
                deadline,
                f"changed={changed} servedDuringRefresh={servedDuringRefresh}",
            )
            poll += 1
            status, headers, page = browser.get(self.cachedURL(f"?poll={poll}"))
            self.assertEqual(status, 200, page)
            self.assertEqual(headers["x-cache"], "MISS")
            facts = dataAttributes(page)
            earlier = seen.setdefault(facts["backend"], [])
            if not earlier:
                self.assertEqual(facts["fragment-waited"], "yes")
            else:
                self.assertEqual(facts["fragment-waited"], "no")
                self.assertGreaterEqual(
                    int(facts["fragment-render"]),
                    int(earlier[-1]["fragment-render"]),
                )
                if facts["fragment-rendered-at"] != earlier[0]["fragment-rendered-at"]:
                    changed = True
                    self.assertGreater(
                        float(facts["fragment-rendered-at"]),
                        float(earlier[0]["fragment-rendered-at"]),
                    )
            if facts["refreshing"] != "none":
                self.assertLess(int(facts["fragment-render"]), int(facts["refreshing"]))
                servedDuringRefresh = True
            earlier.append(facts)
            time.sleep(0.1)

        self.stopDemo()


class SessionsExampleTests(TestCase):
    """
    C{examples/sessions.tac} works as its documentation says: two copies
    sharing the session daemon's sessions.
    """

    def startProcess(self, name: str, argv: List[str], **env: str) -> PeerProcess:
        """
        Start C{twistd -n} with C{argv} (killed when the test ends).
        """
        return startPeer(
            self,
            name,
            [*TWISTD, "-n", "--pidfile=", *argv],
            os.path.join(self.directory, f"{name}.log"),
            cwd=CHECKOUT,
            env=dict(os.environ, **env),
        )

    def waitListening(self, peer: PeerProcess, address: Address) -> None:
        """
        Wait until C{peer} accepts connections on C{address} (at most 30 s).
        """
        deadline = time.monotonic() + 30
        while not accepts(address):
            self.assertTrue(peer.running(), peer.output())
            self.assertLess(time.monotonic(), deadline, peer.output())
            time.sleep(0.1)

    def getEventually(self, browser: Browser, url: str) -> str:
        """
        GET C{url} until it is not 503 (the app's client of the daemon may
        still be logging in), for at most 30 s; it must then be 200.
        """
        deadline = time.monotonic() + 30
        while True:
            status, _, page = browser.get(url)
            if status != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(status, 200, page)
        return page

    def test_signInSharedAcrossProcesses(self) -> None:
        """
        A browser signs in on one process and is signed in on the other; a
        form without the session's CSRF token is refused with 403; signing
        in changes the session identifier and the old one stops working;
        signing out clears the cookie.
        """
        self.directory = temporaryDirectory(self)
        secret = os.path.join(self.directory, "secret")
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("an example secret, long enough\n")
        socketPath = os.path.join(self.directory, "tlsession.sock")
        daemon = self.startProcess(
            "tlsession",
            ["tlsession", "--listen", f"unix:{socketPath}", "--secret-file", secret],
        )
        self.waitListening(daemon, socketPath)
        ports = [freePort(), freePort()]
        for port in ports:
            app = self.startProcess(
                f"app-{port}",
                ["-y", "examples/sessions.tac"],
                TLSESSION_LISTEN=f"tcp:{port}:interface=127.0.0.1",
                TLSESSION_DAEMON=f"unix:path={socketPath}",
                TLSESSION_SECRET_FILE=secret,
            )
            self.waitListening(app, ("127.0.0.1", port))
        one, two = (f"http://127.0.0.1:{port}/" for port in ports)

        browser = Browser()
        self.assertIn("Visit 1 in this session.", self.getEventually(browser, one))
        page = self.getEventually(browser, two)
        self.assertIn("Visit 2 in this session.", page)
        token = page.split('name="csrf" value="')[1].split('"')[0]
        before = browser.cookie("TLSESSION")

        status, _, _ = browser.post(one + "login", csrf="forged", name="eve")
        self.assertEqual(status, 403)
        status, _, page = browser.post(one + "login", csrf=token, name="alice")
        self.assertEqual(status, 200)
        self.assertIn("Signed in as <b>alice</b>", page)
        after = browser.cookie("TLSESSION")
        self.assertNotEqual(after, before)

        status, _, page = browser.get(two)
        self.assertIn("Signed in as <b>alice</b>", page)
        stranger = Browser()
        stranger.opener.addheaders = [("Cookie", f"TLSESSION={before}")]
        self.assertIn("Visit 1 in this session.", stranger.get(one)[2])

        token = page.split('name="csrf" value="')[1].split('"')[0]
        status, _, page = browser.post(two + "logout", csrf=token)
        self.assertIn("Visit 1 in this session.", page)
        self.assertNotIn("Signed in", page)
        self.assertNotEqual(browser.cookie("TLSESSION"), after)
