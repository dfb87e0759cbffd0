# -*- test-case-name: tests.integration -*-
"""
What the integration tests share: short temporary directories, free ports,
peer programs (nginx, HAProxy) run as child processes that are always
killed, a balancer run in the test's own reactor, a tiny HTTP/1.0 client and
a way to run command-line programs without blocking the reactor.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from attrs import frozen
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, TestCase
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IResponse
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from tests.certs import IssuedCertificate
from tests.peers import requirePeer
from tlbalance.config import BalancerConfig
from tlbalance.service import BalancerService, ListenerService, makeBalancerService
from tlbalance.tap import Options

reactor: Any = _reactor

LOOPBACK = "127.0.0.1"
LOOPBACK6 = "::1"

#: The checkout, for child processes that must run its code.
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PeerFailedError(AssertionError):
    """
    A peer program did not start or stopped early; the message holds its
    log.
    """


# Files and ports.


def temporaryDirectory(testCase: TestCase) -> str:
    """
    A fresh directory under the system's temporary directory, removed when
    the test ends.

    Trial's C{mktemp} builds paths under the current directory, which under
    pytest is the checkout, and its long names overflow the 108 bytes a unix
    socket path may have.
    """
    path = tempfile.mkdtemp(prefix="tli-")
    testCase.addCleanup(shutil.rmtree, path, True)
    return path


def freePort(host: str = LOOPBACK) -> int:
    """
    A TCP port free on C{host} right now, for peers that cannot listen on
    port 0 and report it. Another process could take it before the peer
    binds it; the peer then fails to start, loudly.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def hasIPv6Loopback() -> bool:
    """
    Whether this machine can listen on C{::1}.
    """
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK6, 0))
    except OSError:
        return False
    return True


def requireIPv6Loopback() -> None:
    """
    Skip the test when there is no IPv6 loopback (containers often lack it).
    """
    if not hasIPv6Loopback():
        raise SkipTest("this machine has no IPv6 loopback (::1)")


Address = Union[Tuple[str, int], str]


def accepts(address: Address) -> bool:
    """
    Whether C{address} (C{(host, port)} or a unix socket path) accepts a
    connection right now.
    """
    if isinstance(address, str):
        family = socket.AF_UNIX
    elif ":" in address[0]:
        family = socket.AF_INET6
    else:
        family = socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


def sleep(seconds: float) -> Deferred[None]:
    """
    A L{Deferred} that fires after C{seconds} of reactor time.
    """
    return deferLater(reactor, seconds, lambda: None)


async def waitUntil(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02
) -> float:
    """
    Poll C{condition} until it holds, letting the reactor run in between.

    @return: the seconds it took.
    @raise AssertionError: naming C{what} when C{timeout} passes first.
    """
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        await sleep(interval)
    return time.monotonic() - started


# Peer processes.


class PeerProcess:
    """
    A program the test started, with its output in a log file.

    It runs in a session of its own so that every process it forks goes away
    with it.
    """

    def __init__(self, name: str, argv: Sequence[str], logPath: str, **kw: Any):
        self.name = name
        self.argv = list(argv)
        self.logPath = logPath
        self._log = open(logPath, "ab")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kw,
        )

    @property
    def pid(self) -> int:
        """
        The process id.
        """
        return self.process.pid

    def output(self) -> str:
        """
        Everything the program wrote so far.
        """
        self._log.flush()
        with open(self.logPath, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def running(self) -> bool:
        """
        Whether it has not exited yet.
        """
        return self.process.poll() is None

    def signal(self, number: int) -> None:
        """
        Send a signal to the program alone.
        """
        if self.running():
            os.kill(self.process.pid, number)

    def kill(self) -> None:
        """
        Kill the program and anything it started, and reap it.
        """
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(10)
        self._log.close()

    async def exited(self, timeout: float) -> int:
        """
        Wait (without blocking the reactor) for the program to exit.

        @return: its return code (negative: the signal that ended it).
        """
        await waitUntil(
            lambda: self.process.poll() is not None,
            timeout,
            f"{self.name} (pid {self.pid}) exiting",
        )
        code: int = self.process.returncode
        return code

    async def listening(self, address: Address, timeout: float = 10.0) -> None:
        """
        Wait until C{address} accepts connections.

        @raise PeerFailedError: with the log, when the program exits or the
            address stays closed.
        """
        started = time.monotonic()
        while not accepts(address):
            if not self.running():
                raise PeerFailedError(
                    f"{self.name} exited with {self.process.returncode} before "
                    f"listening on {address}:\n{self.output()}"
                )
            if time.monotonic() - started > timeout:
                raise PeerFailedError(
                    f"{self.name} did not listen on {address} within "
                    f"{timeout:g} s:\n{self.output()}"
                )
            await sleep(0.02)


def startPeer(
    testCase: TestCase, name: str, argv: Sequence[str], logPath: str, **kw: Any
) -> PeerProcess:
    """
    Start a peer program, killed when the test ends (also on failure).
    """
    peer = PeerProcess(name, argv, logPath, **kw)
    testCase.addCleanup(peer.kill)
    return peer


_NGINX_CONFIG = """\
daemon off;
master_process off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    default_type text/plain;
    server {{
{listen}
{tls}
        location / {{ return 200 "{body}"; }}
    }}
}}
"""

#: What the nginx of L{startNginx} answers by default: the addresses of the
#: PROXY header it received, source then destination.
PROXY_ADDRESSES_BODY = (
    "$proxy_protocol_addr $proxy_protocol_port "
    "$proxy_protocol_server_addr $proxy_protocol_server_port"
)


class Nginx:
    """
    An nginx serving one fixed answer, started by L{startNginx}.

    @ivar directory: its prefix directory (configuration, logs, sockets).
    @ivar port: its TCP port, or C{None}.
    @ivar socketPath: its unix socket, or C{None}.
    @ivar process: the running program, or C{None} once killed.
    """

    def __init__(
        self,
        testCase: TestCase,
        directory: str,
        port: Optional[int],
        socketPath: Optional[str],
        proxyProtocol: bool,
        body: str,
        tls: Optional[IssuedCertificate] = None,
    ) -> None:
        self.testCase = testCase
        self.directory = directory
        self.port = port
        self.socketPath = socketPath
        self.process: Optional[PeerProcess] = None
        flag = " proxy_protocol" if proxyProtocol else ""
        tlsLines = ""
        if tls is not None:
            flag = " ssl" + flag
            certificatePath = os.path.join(directory, "server.crt")
            keyPath = os.path.join(directory, "server.key")
            with open(certificatePath, "wb") as f:
                f.write(tls.certPEM + tls.chainPEM)
            with open(keyPath, "wb") as f:
                f.write(tls.keyPEM)
            tlsLines = (
                f"        ssl_certificate {certificatePath};\n"
                f"        ssl_certificate_key {keyPath};"
            )
        listen = []
        if port is not None:
            listen.append(f"        listen {LOOPBACK}:{port}{flag};")
        if socketPath is not None:
            listen.append(f"        listen unix:{socketPath}{flag};")
        self.configPath = os.path.join(directory, "nginx.conf")
        with open(self.configPath, "w") as f:
            f.write(
                _NGINX_CONFIG.format(
                    prefix=directory,
                    listen="\n".join(listen),
                    tls=tlsLines,
                    body=body,
                )
            )

    @property
    def readyAddress(self) -> Address:
        """
        An address to poll for readiness.
        """
        if self.port is not None:
            return (LOOPBACK, self.port)
        assert self.socketPath is not None
        return self.socketPath

    async def start(self) -> None:
        """
        Run nginx and wait until it accepts connections.
        """
        if self.socketPath is not None and os.path.exists(self.socketPath):
            # nginx refuses to bind over a socket file a killed copy left.
            os.unlink(self.socketPath)
        nginx = requirePeer("nginx")
        self.process = startPeer(
            self.testCase,
            "nginx",
            [
                nginx,
                "-p",
                self.directory,
                "-c",
                self.configPath,
                "-e",
                os.path.join(self.directory, "error.log"),
            ],
            os.path.join(self.directory, "nginx.out"),
        )
        await self.process.listening(self.readyAddress)

    def kill(self) -> None:
        """
        SIGKILL nginx: no goodbye to open connections.
        """
        if self.process is not None:
            self.process.kill()
            self.process = None


async def startNginx(
    testCase: TestCase,
    tcp: bool = True,
    unix: bool = True,
    proxyProtocol: bool = True,
    body: str = PROXY_ADDRESSES_BODY,
    tls: Optional[IssuedCertificate] = None,
) -> Nginx:
    """
    Start an nginx answering every request with C{body} (nginx variables
    allowed), on a loopback TCP port and/or a unix socket.

    @param proxyProtocol: require a PROXY header (v1 or v2) on every
        connection.
    @param tls: serve HTTPS with this certificate; the PROXY header then
        comes before the TLS handshake.
    """
    directory = temporaryDirectory(testCase)
    nginx = Nginx(
        testCase,
        directory,
        freePort() if tcp else None,
        os.path.join(directory, "nginx.sock") if unix else None,
        proxyProtocol,
        body,
        tls,
    )
    await nginx.start()
    return nginx


async def startHAProxy(
    testCase: TestCase, config: str, readyAt: Address
) -> PeerProcess:
    """
    Run HAProxy in the foreground with C{config} and wait until C{readyAt}
    accepts connections.
    """
    haproxy = requirePeer("haproxy")
    directory = temporaryDirectory(testCase)
    configPath = os.path.join(directory, "haproxy.cfg")
    with open(configPath, "w") as f:
        f.write(config)
    check = await runProgram([haproxy, "-c", "-f", configPath])
    if check.returncode != 0:
        raise PeerFailedError(f"HAProxy refused its configuration:\n{check.stdout}")
    peer = startPeer(
        testCase,
        "haproxy",
        [haproxy, "-db", "-f", configPath],
        os.path.join(directory, "haproxy.out"),
    )
    await peer.listening(readyAt)
    return peer


def writeCertificateDirectory(
    testCase: TestCase, files: Dict[str, IssuedCertificate]
) -> str:
    """
    Make a C{tlsni:} certificate directory: one C{NAME.pem} per entry of
    C{files}, each holding a key and its certificate.

    @return: the directory.
    """
    directory = os.path.join(temporaryDirectory(testCase), "certs")
    os.mkdir(directory)
    for name, issued in files.items():
        with open(os.path.join(directory, name), "wb") as f:
            f.write(issued.combinedPEM())
    return directory


# Command-line programs.


def runProgram(
    argv: Sequence[str],
    timeout: float = 20.0,
    env: Optional[Dict[str, str]] = None,
    cwd: Optional[str] = None,
    input: Optional[str] = None,
) -> Deferred[subprocess.CompletedProcess[str]]:
    """
    Run a program to completion in a thread, so the reactor (and the
    balancer in it) keeps running meanwhile.

    Its standard input is C{input}, or empty; its output is text.
    """
    return deferToThread(
        subprocess.run,
        list(argv),
        stdin=subprocess.DEVNULL if input is None else None,
        input=input,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def describeRun(result: subprocess.CompletedProcess[str]) -> str:
    """
    A program's command line, exit code and output, for failure messages.
    """
    return (
        f"{' '.join(result.args)}\nexit code {result.returncode}\n"
        f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )


# The balancer, in the test's reactor.


def balancerConfig(*argv: str) -> BalancerConfig:
    """
    The configuration C{twistd tlbalance ARGV} would run with, with a short
    drain so that stopping the balancer at the end of a test is quick.
    """
    options = Options()
    arguments = list(argv)
    if "--drain-timeout" not in arguments:
        arguments += ["--drain-timeout", "1"]
    options.parseOptions(arguments)
    config: BalancerConfig = options["config"]
    return config


def listeningPort(listener: ListenerService) -> IListeningPort:
    """
    The port a started listener service is bound to (for TCP and unix
    endpoints it is bound by the time C{startService} returns).
    """
    assert listener.port is not None, "the listener is not bound yet"
    return listener.port


def startBalancer(
    testCase: TestCase, config: BalancerConfig
) -> Tuple[BalancerService, List[Any]]:
    """
    Start a balancer in the test's reactor, stopped (gracefully) when the
    test ends.

    @return: the service and the address each listener is bound to, in
        C{config.listen} order (L{IPv4Address}, L{IPv6Address} or
        L{UNIXAddress}; typed loosely so tests can read C{host} and C{port}).
    """
    service = makeBalancerService(config, reactor)
    service.startService()
    testCase.addCleanup(service.stopService)
    return service, [
        listeningPort(listener).getHost() for listener in service.listeners
    ]


def startBalancerFromArguments(
    testCase: TestCase, *argv: str
) -> Tuple[BalancerService, List[Any]]:
    """
    L{startBalancer} with a configuration given as C{twistd tlbalance}
    arguments.
    """
    return startBalancer(testCase, balancerConfig(*argv))


# A web backend in the test's reactor.


class ClientAddressPage(Resource):
    """
    Answers with what a Twisted web application would know about its client,
    as one line: C{HOST PORT AUTHORITY}, where C{AUTHORITY} is the PROXY v2
    AUTHORITY TLV (the TLS server name) or C{-}.

    @ivar requests: how many requests it answered.
    @ivar headers: the PROXY header of each connection it answered.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0
        self.headers: List[Any] = []

    def render_GET(self, request: Request) -> bytes:
        """
        Answer with the client's address and the AUTHORITY TLV, and keep
        the connection's PROXY header.
        """
        from tlbalance.proxyprotocol import PP2_TYPE_AUTHORITY

        self.requests += 1
        client = request.getClientAddress()
        header = getattr(request.channel.transport, "proxyHeader", None)
        self.headers.append(header)
        authority = header.tlv(PP2_TYPE_AUTHORITY) if header is not None else None
        request.setHeader(b"content-type", b"text/plain")
        host = getattr(client, "host", None) or getattr(client, "name", "?")
        port = getattr(client, "port", "-")
        shown = authority.decode("utf-8") if authority else "-"
        return f"{host} {port} {shown}".encode()


async def startWebBackend(
    testCase: TestCase, description: str, page: Optional[Resource] = None
) -> Tuple[Any, Any]:
    """
    Serve a L{ClientAddressPage} (or C{page}) on the server endpoint string
    C{description} (such as C{tlproxy:trusted=127.0.0.1/32:tcp:0:...}) in
    the test's reactor.

    @return: the bound address and the resource.
    """
    resource = page if page is not None else ClientAddressPage()
    site = Site(resource)
    site.noisy = False
    port = await serverFromString(reactor, description).listen(site)
    testCase.addCleanup(port.stopListening)
    return port.getHost(), resource


# A small HTTP/1.0 client.


class _BodyCollector(Protocol):
    """
    Collects a response body for L{responseBody}.
    """

    def __init__(self) -> None:
        self.chunks: List[bytes] = []
        self.done: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.chunks))
        else:
            self.done.errback(reason)


def responseBody(response: IResponse) -> Deferred[bytes]:
    """
    The whole body of an Agent's C{response} (what
    L{twisted.web.client.readBody} does, without its warning about the
    agent's transport).
    """
    collector = _BodyCollector()
    response.deliverBody(collector)
    return collector.done


class EmptyResponseError(Exception):
    """
    The server closed the connection without answering.

    @ivar reason: why the connection ended.
    """

    def __init__(self, reason: Failure) -> None:
        super().__init__(reason.getErrorMessage())
        self.reason = reason


@frozen
class Response:
    """
    An HTTP response read until the server closed the connection.

    @ivar status: the status code.
    @ivar body: the body.
    @ivar localAddress: the client socket's own address, which the server
        should report as the client.
    """

    status: int
    body: bytes
    localAddress: Any

    @property
    def text(self) -> str:
        """
        The body as text.
        """
        return self.body.decode("utf-8", "replace")


class _OneRequest(Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received: List[bytes] = []
        self.localAddress: Optional[IAddress] = None
        self.done: Deferred[Response] = Deferred()

    def connectionMade(self) -> None:
        self.localAddress = self.transport.getHost()  # type: ignore[union-attr]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        data = b"".join(self.received)
        head, _, body = data.partition(b"\r\n\r\n")
        statusLine = head.split(b"\r\n", 1)[0].split()
        if len(statusLine) < 2 or not statusLine[1].isdigit():
            self.done.errback(EmptyResponseError(reason))
            return
        assert self.localAddress is not None
        self.done.callback(Response(int(statusLine[1]), body, self.localAddress))


def clientEndpoint(
    address: Union[IAddress, Address], bindHost: Optional[str] = None
) -> IStreamClientEndpoint:
    """
    A client endpoint to C{address} (a Twisted address, C{(host, port)} or a
    unix socket path), bound to C{bindHost} on an ephemeral port when given.
    """
    if isinstance(address, str):
        return UNIXClientEndpoint(reactor, address, timeout=5)
    if isinstance(address, tuple):
        host, port = address
    else:
        host, port = address.host, address.port  # type: ignore[attr-defined]
    if ":" in host:
        bind6 = None if bindHost is None else (bindHost, 0)
        return TCP6ClientEndpoint(reactor, host, port, timeout=5, bindAddress=bind6)
    bind4 = None if bindHost is None else (bindHost, 0)
    return TCP4ClientEndpoint(reactor, host, port, timeout=5, bindAddress=bind4)


def tlsClientEndpoint(
    address: Union[IAddress, Address],
    serverName: str,
    authorityPEM: bytes,
    bindHost: Optional[str] = None,
) -> IStreamClientEndpoint:
    """
    Like L{clientEndpoint}, with TLS on top: sends C{serverName} as SNI and
    checks the certificate against the authority C{authorityPEM}.
    """
    from twisted.internet.endpoints import wrapClientTLS
    from twisted.internet.ssl import Certificate, optionsForClientTLS

    options = optionsForClientTLS(
        serverName, trustRoot=Certificate.loadPEM(authorityPEM)
    )
    return wrapClientTLS(options, clientEndpoint(address, bindHost))


async def httpGet(
    endpoint: IStreamClientEndpoint, path: str = "/", host: str = "test"
) -> Response:
    """
    Send one C{GET} over a new connection and read the answer until the
    server closes.

    @raise EmptyResponseError: the connection closed without an HTTP answer.
    """
    request = (
        f"GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    ).encode()
    protocol = _OneRequest(request)
    await connectProtocol(endpoint, protocol)
    return await protocol.done


async def rawExchange(
    address: Tuple[str, int], *pieces: bytes, gap: float = 0.2, limit: float = 5.0
) -> Tuple[bytes, bool]:
    """
    Connect a plain socket to C{address}, send C{pieces} C{gap} seconds
    apart (so each arrives in a segment of its own), and read until the
    server closes, for at most C{limit} seconds.

    @return: the bytes received, and whether the server reset the
        connection (rather than closing it in order).
    """
    client = socket.socket(
        socket.AF_INET6 if ":" in address[0] else socket.AF_INET, socket.SOCK_STREAM
    )
    client.setblocking(False)
    try:
        try:
            client.connect(address)
        except BlockingIOError:
            pass
        await waitUntil(
            lambda: (
                client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
                and _connected(client)
            ),
            limit,
            f"connecting to {address}",
        )
        for piece in pieces:
            await sleep(gap)
            try:
                client.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                return b"", True
        received: List[bytes] = []
        started = time.monotonic()
        while time.monotonic() - started < limit:
            try:
                data = client.recv(65536)
            except BlockingIOError:
                await sleep(0.02)
                continue
            except ConnectionResetError:
                return b"".join(received), True
            if not data:
                return b"".join(received), False
            received.append(data)
        raise AssertionError(f"{address} kept the connection open for {limit:g} s")
    finally:
        client.close()


def _connected(client: socket.socket) -> bool:
    try:
        client.getpeername()
    except OSError:
        return False
    return True


# Byte relays in the test's reactor.


class _RelayHalf(Protocol):
    """
    One side of a relayed connection: what it reads, the other side writes.
    """

    peer: Optional[_RelayHalf] = None

    def connectionMade(self) -> None:
        # The outbound side is up: the client's bytes may flow now.
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resumeProducing()  # type: ignore[attr-defined]

    def dataReceived(self, data: bytes) -> None:
        assert self.peer is not None and self.peer.transport is not None
        self.peer.transport.write(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.loseConnection()


class _RelayServer(_RelayHalf):
    """
    The accepted side: holds the client still until the outbound
    connection is made.
    """

    def __init__(self, target: IStreamClientEndpoint) -> None:
        self.target = target

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.pauseProducing()  # type: ignore[attr-defined]
        outbound = _RelayHalf()
        outbound.peer = self
        self.peer = outbound
        transport = self.transport
        connecting = connectProtocol(self.target, outbound)
        connecting.addErrback(lambda _: transport.loseConnection())


async def startRelay(testCase: TestCase, target: IStreamClientEndpoint) -> Any:
    """
    Listen on a loopback port and pump bytes, unchanged, to C{target}: an
    L4 hop whose own address differs from the client's.

    @return: the relay's listening address.
    """
    port = await serverFromString(reactor, f"tcp:0:interface={LOOPBACK}").listen(
        Factory.forProtocol(lambda: _RelayServer(target))
    )
    testCase.addCleanup(port.stopListening)
    return port.getHost()


PYTHON = sys.executable

#: The command line of twistd under this Python. C{python -m
#: twisted.scripts.twistd} does nothing (the module has no main guard), and
#: the C{twistd} script may not be next to the interpreter.
TWISTD = [
    PYTHON,
    "-c",
    "import sys; sys.argv[0] = 'twistd'; from twisted.scripts.twistd import run; run()",
]

__all__ = [
    "CHECKOUT",
    "LOOPBACK",
    "LOOPBACK6",
    "PROXY_ADDRESSES_BODY",
    "PYTHON",
    "TWISTD",
    "ClientAddressPage",
    "EmptyResponseError",
    "Nginx",
    "PeerFailedError",
    "PeerProcess",
    "Response",
    "accepts",
    "balancerConfig",
    "clientEndpoint",
    "describeRun",
    "freePort",
    "hasIPv6Loopback",
    "httpGet",
    "listeningPort",
    "rawExchange",
    "requireIPv6Loopback",
    "runProgram",
    "sleep",
    "startBalancer",
    "startBalancerFromArguments",
    "startHAProxy",
    "startNginx",
    "startPeer",
    "startRelay",
    "startWebBackend",
    "tlsClientEndpoint",
    "temporaryDirectory",
    "writeCertificateDirectory",
    "waitUntil",
]
