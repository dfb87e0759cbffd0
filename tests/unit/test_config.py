"""
Tests for L{tlbalance.config}: the TOML file, command-line overrides, and
the messages a user sees when a setting is wrong.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from typing import Any, Mapping, Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet.endpoints import _SystemdParser, serverFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.python.systemd import ListenFDs
from twisted.trial.unittest import SynchronousTestCase

from tests.certs import makeAuthority
from tlbalance._endpoints import quoteEndpointArgument
from tlbalance.config import (
    DEFAULT_BACKLOG,
    BackendConfig,
    BalancerConfig,
    ConfigError,
    HealthCheckConfig,
    SessionDaemonSettings,
    buildConfig,
    describeSetting,
    loadConfig,
    parseSetting,
    withListenBacklog,
)
from tlsuite._twisted import parseEndpointString

LISTEN = ["tcp:8080"]
BACKEND = ["127.0.0.1:8081"]


def temporaryDirectory(testCase: SynchronousTestCase) -> str:
    """
    A fresh directory removed after the test (not under the working
    directory, which is the checkout when pytest runs).
    """
    directory = tempfile.mkdtemp(prefix="tlbalance-test-")
    testCase.addCleanup(shutil.rmtree, directory)
    return directory


def writeFile(
    testCase: SynchronousTestCase,
    content: Union[str, bytes],
    name: str = "tlbalance.toml",
) -> str:
    """
    Write C{content} to a file in a fresh directory and return its path.
    """
    path = os.path.join(temporaryDirectory(testCase), name)
    with open(path, "wb") as f:
        f.write(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def selfSignedPEM() -> bytes:
    """
    A private key and a self-signed certificate for it, in PEM, made now.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)


def minimal(**settings: Any) -> dict[str, Any]:
    """
    File values with one listener and one backend, plus C{settings} (given
    with underscores for dashes).
    """
    values: dict[str, Any] = {"listen": LISTEN, "backend": BACKEND}
    values.update({key.replace("_", "-"): value for key, value in settings.items()})
    return values


class ConfigErrorAssertions(SynchronousTestCase):
    """
    Shared assertion: building fails with exactly the message a user reads.
    """

    def assertFails(
        self,
        fileValues: Mapping[str, Any],
        message: str,
        overrides: Optional[Mapping[str, Any]] = None,
    ) -> None:
        """
        L{buildConfig} raises L{ConfigError} with C{message}.
        """
        error = self.assertRaises(ConfigError, buildConfig, fileValues, overrides)
        self.assertEqual(str(error), message)


class HealthCheckParseTests(SynchronousTestCase):
    """
    L{HealthCheckConfig.parse} reads checks written as C{tcp} or
    C{http [METHOD] [/PATH] [STATUS]}.
    """

    def test_tcp(self) -> None:
        """
        C{tcp} is a connect check with HAProxy's inter/rise/fall defaults.
        """
        self.assertEqual(
            HealthCheckConfig.parse("tcp"),
            HealthCheckConfig(kind="tcp", inter=2.0, rise=2, fall=3, timeout=None),
        )

    def test_httpFull(self) -> None:
        """
        Method, path and expected status are all taken from the text.
        """
        check = HealthCheckConfig.parse("http HEAD /health 204")
        self.assertEqual(
            (check.kind, check.method, check.path, check.expectStatus),
            ("http", "HEAD", "/health", 204),
        )

    def test_httpDefaults(self) -> None:
        """
        C{http} alone asks for C{GET /} and expects 200; any part may be
        left out.
        """
        for text, expected in [
            ("http", ("GET", "/", 200)),
            ("HTTP /health", ("GET", "/health", 200)),
            ("http POST", ("POST", "/", 200)),
            ("http /status 204", ("GET", "/status", 204)),
            ("  http   GET   /x?y=1   301 ", ("GET", "/x?y=1", 301)),
        ]:
            check = HealthCheckConfig.parse(text)
            self.assertEqual(
                (check.method, check.path, check.expectStatus), expected, text
            )

    def test_defaults(self) -> None:
        """
        Keyword arguments set the interval, rise, fall and timeout.
        """
        check = HealthCheckConfig.parse("tcp", inter=5.0, rise=1, fall=4, timeout=1.0)
        self.assertEqual(
            (check.inter, check.rise, check.fall, check.timeout), (5.0, 1, 4, 1.0)
        )

    def test_errors(self) -> None:
        """
        A malformed check is refused with a message quoting it and saying
        what is wrong.
        """
        for text, message in [
            (
                "",
                'empty health check; expected "tcp", '
                '"http [METHOD] [/PATH] [STATUS]" or "none"',
            ),
            ("tcp 80", '"tcp 80": a tcp check takes no arguments'),
            (
                "udp",
                '"udp": unknown kind of check "udp"; expected "tcp", '
                '"http [METHOD] [/PATH] [STATUS]" or "none"',
            ),
            (
                "http get /x",
                '"http get /x": "get" is neither a method (upper case, like GET) '
                'nor a path (starting with "/")',
            ),
            (
                "http GET health",
                '"http GET health": unexpected "health"; expected "tcp", '
                '"http [METHOD] [/PATH] [STATUS]" or "none"',
            ),
            (
                "http GET /x 999",
                '"http GET /x 999": the status must be from 100 to 599, got 999',
            ),
            (
                "http GET /x 200 extra",
                '"http GET /x 200 extra": unexpected "extra"; expected "tcp", '
                '"http [METHOD] [/PATH] [STATUS]" or "none"',
            ),
            (
                "http GET /caf\u00e9",
                '"http GET /caf\u00e9": the path must be printable ASCII '
                "(percent-encode anything else)",
            ),
        ]:
            error = self.assertRaises(ConfigError, HealthCheckConfig.parse, text)
            self.assertEqual(str(error), message)

    def test_validatedWhenBuiltDirectly(self) -> None:
        """
        A check built in code with an impossible value is refused, naming
        the attribute.
        """
        for kwargs, message in [
            ({"kind": "udp"}, 'kind: expected one of tcp, http, got "udp"'),
            (
                {"kind": "tcp", "inter": 0},
                "inter: expected a number of seconds > 0, got 0",
            ),
            ({"kind": "tcp", "rise": 0}, "rise: expected an integer >= 1, got 0"),
            ({"kind": "tcp", "fall": 0}, "fall: expected an integer >= 1, got 0"),
            (
                {"kind": "tcp", "timeout": -1.0},
                "timeout: expected a number of seconds > 0, got -1.0",
            ),
            (
                {"kind": "http", "expectStatus": 42},
                "expectStatus: expected an integer from 100 to 599, got 42",
            ),
        ]:
            error = self.assertRaises(ConfigError, HealthCheckConfig, **kwargs)
            self.assertEqual(str(error), message)


class BackendConfigTests(SynchronousTestCase):
    """
    L{BackendConfig} built directly in code.
    """

    def test_nameDefaultsToEndpoint(self) -> None:
        """
        Without a name, a backend is called by its endpoint string.
        """
        backend = BackendConfig("tcp:host=10.0.0.1:port=80")
        self.assertEqual(backend.name, "tcp:host=10.0.0.1:port=80")
        self.assertEqual(
            (backend.weight, backend.backup, backend.maxconn, backend.sendProxy),
            (1, False, 0, None),
        )

    def test_validated(self) -> None:
        """
        Out-of-range values are refused, naming the attribute.
        """
        for kwargs, message in [
            ({"weight": 257}, "weight: expected an integer from 0 to 256, got 257"),
            ({"maxconn": -1}, "maxconn: expected an integer >= 0, got -1"),
            ({"backup": 1}, "backup: expected true or false, got 1"),
            ({"sendProxy": "v3"}, 'sendProxy: expected one of v1, v2, none, got "v3"'),
        ]:
            error = self.assertRaises(ConfigError, BackendConfig, "unix:/s", **kwargs)
            self.assertEqual(str(error), message)


class BalancerConfigTests(SynchronousTestCase):
    """
    L{BalancerConfig} defaults, direct validation and start-up warnings.
    """

    def config(self, **kwargs: Any) -> BalancerConfig:
        """
        A configuration with one listener and one backend.
        """
        kwargs.setdefault("backends", [BackendConfig("tcp:host=127.0.0.1:port=1")])
        return BalancerConfig(listen=["tcp:8080"], **kwargs)

    def test_defaults(self) -> None:
        """
        The defaults are finite and HAProxy-like.
        """
        config = self.config()
        self.assertEqual(config.listen, ("tcp:8080",))
        self.assertEqual(
            (
                config.algorithm,
                config.sendProxy,
                config.proxyCRC32C,
                config.acceptProxy,
                config.proxyHeaderTimeout,
                config.connectTimeout,
                config.clientTimeout,
                config.serverTimeout,
                config.retries,
                config.failTimeout,
                config.drainTimeout,
                config.pendingBufferBytes,
                config.firstByteTimeout,
            ),
            (
                "roundrobin",
                None,
                False,
                (),
                5.0,
                5.0,
                30.0,
                30.0,
                3,
                10.0,
                30.0,
                262144,
                0.0,
            ),
        )

    def test_hungBackendDefault(self) -> None:
        """
        A backend that accepts but never answers holds a client for 30
        seconds by default, as HAProxy's documented C{timeout server}
        practice, not for five minutes; client and server timeouts are
        equal, as HAProxy recommends for TCP.
        """
        config = self.config()
        self.assertEqual(config.serverTimeout, 30.0)
        self.assertEqual(config.clientTimeout, config.serverTimeout)

    def test_validatedWhenBuiltDirectly(self) -> None:
        """
        Impossible values are refused even without L{buildConfig}.
        """
        for kwargs, message in [
            ({"retries": 11}, "retries: expected an integer from 0 to 10, got 11"),
            (
                {"pendingBufferBytes": 1000},
                "pendingBufferBytes: expected an integer of bytes >= 1024, got 1000",
            ),
            (
                {"connectTimeout": 0},
                "connectTimeout: expected a number of seconds > 0, got 0",
            ),
            (
                {"clientTimeout": -1},
                "clientTimeout: expected a number of seconds >= 0, got -1",
            ),
            (
                {"firstByteTimeout": -1},
                "firstByteTimeout: expected a number of seconds >= 0, got -1",
            ),
            (
                {"algorithm": "fastest"},
                "algorithm: expected one of roundrobin, leastconn, source, "
                'random, got "fastest"',
            ),
            (
                {"acceptProxy": ["10.0.0.0/33"]},
                'acceptProxy: "10.0.0.0/33" is not an IP address, a CIDR network '
                'or "unix"',
            ),
        ]:
            error = self.assertRaises(ConfigError, self.config, **kwargs)
            self.assertEqual(str(error), message)

    def test_noWarnings(self) -> None:
        """
        The defaults give no warning.
        """
        self.assertEqual(self.config().warnings(), [])

    def test_disabledTimeoutsWarn(self) -> None:
        """
        Client and server timeouts both 0 (idle connections never closed)
        are allowed but warned about, as HAProxy does; one of them at 0 is
        not, since the other still bounds an idle connection.
        """
        self.assertEqual(
            self.config(clientTimeout=0, serverTimeout=0).warnings(),
            [
                "client-timeout and server-timeout are both 0: idle connections "
                "are never closed, so a stuck or malicious client or backend can "
                "hold a connection open forever; set a number of seconds to "
                "bound them",
            ],
        )
        self.assertEqual(self.config(clientTimeout=0).warnings(), [])
        self.assertEqual(self.config(serverTimeout=0).warnings(), [])

    def test_firstByteTimeoutAboveIdleWarns(self) -> None:
        """
        A first-byte timeout not below the idle timeout can never fire
        first: it is allowed but warned about.
        """
        message = (
            "first-byte-timeout (30s) is not below the idle timeout (30s): it "
            "has no effect; set it below client-timeout and server-timeout"
        )
        self.assertEqual(self.config(firstByteTimeout=30).warnings(), [message])
        self.assertEqual(self.config(firstByteTimeout=10).warnings(), [])
        self.assertEqual(
            self.config(
                firstByteTimeout=30, clientTimeout=0, serverTimeout=60
            ).warnings(),
            [],
        )

    def test_allWeightsZeroWarns(self) -> None:
        """
        With every backend at weight 0 nothing would be forwarded.
        """
        config = self.config(
            backends=[
                BackendConfig("unix:/a", weight=0),
                BackendConfig("unix:/b", weight=0),
            ]
        )
        self.assertEqual(
            config.warnings(),
            [
                "every backend has weight 0: no new connection will be forwarded "
                "until one gets a weight above 0"
            ],
        )
        self.assertEqual(
            self.config(
                backends=[BackendConfig("unix:/a", weight=0), BackendConfig("unix:/b")]
            ).warnings(),
            [],
        )

    def test_crc32cWithoutV2Warns(self) -> None:
        """
        C{proxy-crc32c} does nothing unless some backend gets PROXY v2.
        """
        message = (
            "proxy-crc32c has no effect: no backend is sent PROXY v2 headers "
            "(set send-proxy to v2)"
        )
        self.assertEqual(self.config(proxyCRC32C=True).warnings(), [message])
        self.assertEqual(
            self.config(proxyCRC32C=True, sendProxy="v1").warnings(), [message]
        )
        self.assertEqual(self.config(proxyCRC32C=True, sendProxy="v2").warnings(), [])
        self.assertEqual(
            self.config(
                proxyCRC32C=True, backends=[BackendConfig("unix:/a", sendProxy="v2")]
            ).warnings(),
            [],
        )


class LoadConfigTests(SynchronousTestCase):
    """
    L{loadConfig} reads TOML and reports unreadable or malformed files.
    """

    def test_reads(self) -> None:
        """
        The file's top-level table is returned as it is, unchecked.
        """
        path = writeFile(
            self, 'listen = ["tcp:80"]\nanything = 1\n[[backend]]\nendpoint = "a:1"\n'
        )
        self.assertEqual(
            loadConfig(path),
            {"listen": ["tcp:80"], "anything": 1, "backend": [{"endpoint": "a:1"}]},
        )

    def test_missing(self) -> None:
        """
        A file that does not exist is named in the error.
        """
        path = os.path.join(temporaryDirectory(self), "missing.toml")
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(
            str(error),
            f"{path}: cannot read the configuration file: No such file or directory",
        )

    def test_notTOML(self) -> None:
        """
        A syntax error names the file, the line and the column.
        """
        path = writeFile(self, 'listen = ["tcp:80"]\nretries = = 3\n')
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertTrue(str(error).startswith(f"{path}: not valid TOML: "), str(error))
        self.assertIn("line 2, column", str(error))

    def test_notUTF8(self) -> None:
        """
        Bytes that are not UTF-8 are reported as such.
        """
        path = writeFile(self, b'name = "\xff"\n')
        error = self.assertRaises(ConfigError, loadConfig, path)
        self.assertEqual(str(error), f"{path}: not valid TOML: not UTF-8 text (byte 8)")


FULL_FILE = """\
listen = ["tcp:8080", "unix:/run/tlbalance.sock"]
algorithm = "leastconn"
send-proxy = "v2"
proxy-crc32c = true
dontlog-normal = true
accept-proxy = ["10.0.0.0/8", "192.168.1.7", "unix"]
proxy-header-timeout = 3
connect-timeout = 2.5
client-timeout = 60
server-timeout = 90
first-byte-timeout = 20
retries = 2
fail-timeout = 15
drain-timeout = 45
pending-buffer-bytes = 65536
check = "http GET /health 200"
check-inter = 5
check-rise = 3
check-fall = 4
check-timeout = 1.5

[[backend]]
endpoint = "tcp:host=10.0.0.2:port=8081"
name = "web1"
weight = 10
backup = false
maxconn = 100
send-proxy = "v1"
check = "tcp"
check-inter = 1
check-rise = 1
check-fall = 2
check-timeout = 0.5

[[backend]]
endpoint = "10.0.0.3:8081"
backup = true
"""


class FileTests(ConfigErrorAssertions):
    """
    Every key of the TOML file lands in the configuration.
    """

    def test_everyKey(self) -> None:
        """
        A file using every key gives exactly the configuration it describes;
        backends without their own check get the top-level one.
        """
        config = buildConfig(loadConfig(writeFile(self, FULL_FILE)), {})
        self.assertEqual(
            config,
            BalancerConfig(
                listen=("tcp:8080", "unix:/run/tlbalance.sock"),
                backends=(
                    BackendConfig(
                        endpoint="tcp:host=10.0.0.2:port=8081",
                        name="web1",
                        weight=10,
                        backup=False,
                        maxconn=100,
                        sendProxy="v1",
                        check=HealthCheckConfig(
                            kind="tcp", inter=1.0, rise=1, fall=2, timeout=0.5
                        ),
                    ),
                    BackendConfig(
                        endpoint="tcp:host=10.0.0.3:port=8081",
                        name="10.0.0.3:8081",
                        backup=True,
                        check=HealthCheckConfig(
                            kind="http",
                            method="GET",
                            path="/health",
                            expectStatus=200,
                            inter=5.0,
                            rise=3,
                            fall=4,
                            timeout=1.5,
                        ),
                    ),
                ),
                algorithm="leastconn",
                sendProxy="v2",
                proxyCRC32C=True,
                dontlogNormal=True,
                acceptProxy=("10.0.0.0/8", "192.168.1.7/32", "unix"),
                proxyHeaderTimeout=3.0,
                connectTimeout=2.5,
                clientTimeout=60.0,
                serverTimeout=90.0,
                firstByteTimeout=20.0,
                retries=2,
                failTimeout=15.0,
                drainTimeout=45.0,
                pendingBufferBytes=65536,
            ),
        )
        self.assertEqual(config.warnings(), [])

    def test_numbersAreNumbers(self) -> None:
        """
        Timeouts written as TOML integers become floats; counts stay ints.
        """
        config = buildConfig(minimal(client_timeout=60, retries=2))
        self.assertIsInstance(config.clientTimeout, float)
        self.assertIsInstance(config.retries, int)

    def test_shortForms(self) -> None:
        """
        C{listen} and C{accept-proxy} may be single strings (the latter
        comma-separated), and backends may be plain endpoint strings.
        """
        config = buildConfig(
            {
                "listen": "tcp:80",
                "accept-proxy": "127.0.0.1, ::1,unix,",
                "backend": ["a:1", "/run/app.sock"],
            }
        )
        self.assertEqual(config.listen, ("tcp:80",))
        self.assertEqual(config.acceptProxy, ("127.0.0.1/32", "::1/128", "unix"))
        self.assertEqual(
            [b.endpoint for b in config.backends],
            ["tcp:host=a:port=1", "unix:path=/run/app.sock"],
        )

    def test_checkNoneOptsOut(self) -> None:
        """
        A backend with C{check = "none"} has no check even when the file
        sets a default one.
        """
        config = buildConfig(
            {
                "listen": LISTEN,
                "check": "tcp",
                "backend": [{"endpoint": "a:1"}, {"endpoint": "b:1", "check": "none"}],
            }
        )
        self.assertEqual(
            [b.check for b in config.backends], [HealthCheckConfig(kind="tcp"), None]
        )

    def test_algorithmCase(self) -> None:
        """
        Words are accepted in any case.
        """
        config = buildConfig(minimal(algorithm="LeastConn", send_proxy="V1"))
        self.assertEqual((config.algorithm, config.sendProxy), ("leastconn", "v1"))

    def test_noProxyByDefault(self) -> None:
        """
        Without C{accept-proxy}, PROXY headers are not accepted, and an
        empty list says the same.
        """
        self.assertEqual(buildConfig(minimal()).acceptProxy, ())
        self.assertEqual(buildConfig(minimal(accept_proxy=[])).acceptProxy, ())

    def test_unknownKeys(self) -> None:
        """
        Misspelt keys are errors, with the nearest real key suggested.
        """
        self.assertFails(
            minimal(clinet_timeout=3),
            "clinet-timeout: unknown setting; did you mean client-timeout?",
        )
        self.assertFails(minimal(colour="red"), "colour: unknown setting")
        self.assertFails(
            {"listen": LISTEN, "backend": [{"endpoint": "a:1", "wieght": 2}]},
            "backend[0].wieght: unknown setting; did you mean weight?",
        )

    def test_topLevelTypes(self) -> None:
        """
        A value of the wrong type or out of range names the key, what was
        expected and what was found.
        """
        for key, value, message in [
            (
                "algorithm",
                "fastest",
                "algorithm: expected one of roundrobin, leastconn, source, random, "
                'got "fastest"',
            ),
            (
                "send-proxy",
                "v3",
                'send-proxy: expected one of v1, v2, none, got "v3"',
            ),
            ("send-proxy", 2, "send-proxy: expected one of v1, v2, none, got 2"),
            (
                "proxy-crc32c",
                "yes",
                'proxy-crc32c: expected true or false, got "yes"',
            ),
            (
                "proxy-header-timeout",
                0,
                "proxy-header-timeout: expected a number of seconds > 0, got 0",
            ),
            (
                "connect-timeout",
                0.0,
                "connect-timeout: expected a number of seconds > 0, got 0.0",
            ),
            (
                "client-timeout",
                "30s",
                'client-timeout: expected a number of seconds >= 0, got "30s"',
            ),
            (
                "client-timeout",
                float("inf"),
                "client-timeout: expected a number of seconds >= 0, got inf",
            ),
            (
                "server-timeout",
                True,
                "server-timeout: expected a number of seconds >= 0, got true",
            ),
            (
                "server-timeout",
                float("nan"),
                "server-timeout: expected a number of seconds >= 0, got nan",
            ),
            ("retries", 11, "retries: expected an integer from 0 to 10, got 11"),
            ("retries", -1, "retries: expected an integer from 0 to 10, got -1"),
            ("retries", 2.0, "retries: expected an integer from 0 to 10, got 2.0"),
            (
                "fail-timeout",
                -1,
                "fail-timeout: expected a number of seconds >= 0, got -1",
            ),
            (
                "drain-timeout",
                -0.5,
                "drain-timeout: expected a number of seconds >= 0, got -0.5",
            ),
            (
                "pending-buffer-bytes",
                100,
                "pending-buffer-bytes: expected an integer of bytes >= 1024, got 100",
            ),
            (
                "check-inter",
                0,
                "check-inter: expected a number of seconds > 0, got 0",
            ),
            ("check-rise", 0, "check-rise: expected an integer >= 1, got 0"),
            ("check-fall", "3", 'check-fall: expected an integer >= 1, got "3"'),
            (
                "check-timeout",
                0,
                "check-timeout: expected a number of seconds > 0, got 0",
            ),
            (
                "accept-proxy",
                8,
                "accept-proxy: expected CIDR networks, IP addresses and/or "
                '"unix", separated by commas, got 8',
            ),
            (
                "accept-proxy",
                ["10.0.0.0/8", 7],
                "accept-proxy: expected CIDR networks, IP addresses and/or "
                '"unix", separated by commas, got 7',
            ),
            (
                "accept-proxy",
                ["10.0.0.0/8", "example.com"],
                'accept-proxy: "example.com" is not an IP address, a CIDR network '
                'or "unix"',
            ),
            (
                "accept-proxy",
                ["10.1.2.3/8"],
                'accept-proxy: "10.1.2.3/8" has host bits set; did you mean '
                '"10.0.0.0/8"?',
            ),
            (
                "check",
                7,
                'check: expected a health check ("tcp", '
                '"http [METHOD] [/PATH] [STATUS]" or "none"), got 7',
            ),
            (
                "check",
                "http get",
                'check: "http get": "get" is neither a method (upper case, like '
                'GET) nor a path (starting with "/")',
            ),
        ]:
            self.assertFails({**minimal(), key: value}, message)

    def test_backendTypes(self) -> None:
        """
        A wrong value in a C{[[backend]]} table names the backend by its
        position (counting from 0) and the key.
        """
        for table, message in [
            (
                {"weight": "heavy"},
                'backend[2].weight: expected an integer from 0 to 256, got "heavy"',
            ),
            (
                {"weight": 300},
                "backend[2].weight: expected an integer from 0 to 256, got 300",
            ),
            (
                {"backup": "yes"},
                'backend[2].backup: expected true or false, got "yes"',
            ),
            (
                {"maxconn": -5},
                "backend[2].maxconn: expected an integer >= 0, got -5",
            ),
            (
                {"send-proxy": "v3"},
                'backend[2].send-proxy: expected one of v1, v2, none, got "v3"',
            ),
            (
                {"name": ""},
                'backend[2].name: expected a non-empty string, got ""',
            ),
            (
                {"name": 3},
                "backend[2].name: expected a non-empty string, got 3",
            ),
            (
                {"check": ["tcp"]},
                'backend[2].check: expected a health check ("tcp", '
                '"http [METHOD] [/PATH] [STATUS]" or "none"), got ["tcp"]',
            ),
            (
                {"check": "http GET /x 600"},
                'backend[2].check: "http GET /x 600": the status must be from '
                "100 to 599, got 600",
            ),
            (
                {"check": "tcp", "check-inter": -1},
                "backend[2].check-inter: expected a number of seconds > 0, got -1",
            ),
            (
                {"check-inter": 3},
                "backend[2].check-inter: set, but this backend has no check",
            ),
            (
                {"check": "none", "check-fall": 3},
                "backend[2].check-fall: set, but this backend has no check",
            ),
            (
                {"endpoint": 8080},
                "backend[2].endpoint: expected a client endpoint string, got 8080",
            ),
        ]:
            backends = [{"endpoint": "a:1"}, {"endpoint": "b:1"}]
            backends.append({"endpoint": "c:1", **table})
            self.assertFails({"listen": LISTEN, "backend": backends}, message)

    def test_backendShape(self) -> None:
        """
        Backends must be a list of tables or endpoint strings, each with an
        endpoint.
        """
        self.assertFails(
            {"listen": LISTEN, "backend": [{"name": "web"}]},
            "backend[0]: missing endpoint (a client endpoint string)",
        )
        self.assertFails(
            {"listen": LISTEN, "backend": ["a:1", 5]},
            "backend[1]: expected a [[backend]] table or an endpoint string, got 5",
        )
        self.assertFails(
            {"listen": LISTEN, "backend": 5},
            "backend: expected a list of backends, got 5",
        )

    def test_singleBracketBackend(self) -> None:
        """
        C{[backend]} (one table) instead of C{[[backend]]} gets a hint.
        """
        path = writeFile(self, 'listen = ["tcp:80"]\n[backend]\nendpoint = "a:1"\n')
        self.assertFails(
            loadConfig(path),
            "backend: expected a list of backends, got a table; write [[backend]] "
            "(double brackets) before each backend",
        )

    def test_duplicateNames(self) -> None:
        """
        Two backends with one name (given, or defaulted from the same
        endpoint) are refused, naming both.
        """
        self.assertFails(
            {
                "listen": LISTEN,
                "backend": [
                    {"endpoint": "a:1", "name": "web"},
                    {"endpoint": "b:1"},
                    {"endpoint": "c:1", "name": "web"},
                ],
            },
            'backend[2].name: the backend name "web" is already used by '
            "backend[0]; give each backend a distinct name",
        )
        self.assertFails(
            {"listen": LISTEN, "backend": [{"endpoint": "a:1"}, {"endpoint": "a:1"}]},
            'backend[1].name: the backend name "a:1" is already used by '
            "backend[0]; give each backend a distinct name",
        )

    def test_sameEndpointDistinctNames(self) -> None:
        """
        The same server may be listed twice under different names.
        """
        config = buildConfig(
            {
                "listen": LISTEN,
                "backend": [
                    {"endpoint": "a:1", "name": "one"},
                    {"endpoint": "a:1", "name": "two"},
                ],
            }
        )
        self.assertEqual([b.name for b in config.backends], ["one", "two"])

    def test_listenShape(self) -> None:
        """
        C{listen} must hold endpoint strings, each once.
        """
        self.assertFails(
            {"listen": 80, "backend": BACKEND},
            "listen: expected a list of server endpoint strings, got 80",
        )
        self.assertFails(
            {"listen": ["tcp:80", "tcp:80"], "backend": BACKEND},
            'listen: "tcp:80" is given twice',
        )

    def test_required(self) -> None:
        """
        At least one listener and one backend are needed, and the message
        says how to give them.
        """
        self.assertFails(
            {"backend": BACKEND},
            "no listen endpoint: give --listen ENDPOINT (or listen = [...] in "
            "the configuration file)",
        )
        self.assertFails(
            {"listen": [], "backend": BACKEND},
            "no listen endpoint: give --listen ENDPOINT (or listen = [...] in "
            "the configuration file)",
        )
        self.assertFails(
            {"listen": LISTEN, "backend": []},
            "no backend: give --backend ENDPOINT (or [[backend]] tables in the "
            "configuration file)",
        )
        self.assertFails(
            {},
            "no listen endpoint: give --listen ENDPOINT (or "
            "listen = [...] in the configuration file)\n"
            "no backend: give --backend ENDPOINT (or [[backend]] tables in the "
            "configuration file)",
        )

    def test_notATable(self) -> None:
        """
        The configuration as a whole must be a table.
        """
        self.assertFails(
            ["listen"],  # type: ignore[arg-type]
            "the configuration must be a table of settings",
        )


class PrecedenceTests(ConfigErrorAssertions):
    """
    Command-line settings override the file's.
    """

    def test_commandLineWins(self) -> None:
        """
        A setting on the command line beats the same key in the file; the
        file's other settings stay.
        """
        config = buildConfig(
            minimal(algorithm="source", client_timeout=60, retries=1),
            {"algorithm": "random", "client-timeout": 5.0},
        )
        self.assertEqual(
            (config.algorithm, config.clientTimeout, config.retries),
            ("random", 5.0, 1),
        )

    def test_listsReplaced(self) -> None:
        """
        C{--listen} and C{--backend} replace the file's lists instead of
        adding to them.
        """
        config = buildConfig(
            {
                "listen": ["tcp:80", "tcp:81"],
                "backend": [{"endpoint": "a:1", "weight": 5}],
            },
            {"listen": ["tcp:90"], "backend": ["b:2", "c:3"]},
        )
        self.assertEqual(config.listen, ("tcp:90",))
        self.assertEqual(
            [(b.name, b.weight) for b in config.backends], [("b:2", 1), ("c:3", 1)]
        )

    def test_commandLineOnly(self) -> None:
        """
        With no file, the command line alone is enough.
        """
        config = buildConfig({}, {"listen": ["tcp:90"], "backend": ["b:2"]})
        self.assertEqual(config.listen, ("tcp:90",))
        self.assertEqual(config.backends, (BackendConfig("tcp:host=b:port=2", "b:2"),))

    def test_checkDefaults(self) -> None:
        """
        C{--check} and C{--check-*} set the check of every backend that does
        not name its own, whether it came from the file or the command line;
        the file's C{check-*} keys apply to C{--backend} backends too.
        """
        config = buildConfig(
            {
                "listen": LISTEN,
                "check-rise": 5,
                "backend": [
                    {"endpoint": "a:1"},
                    {"endpoint": "b:1", "check": "tcp", "check-fall": 9},
                ],
            },
            {"check": "http GET /ping 204", "check-inter": 1.0},
        )
        self.assertEqual(
            [b.check for b in config.backends],
            [
                HealthCheckConfig(
                    kind="http", path="/ping", expectStatus=204, inter=1.0, rise=5
                ),
                HealthCheckConfig(kind="tcp", inter=1.0, rise=5, fall=9),
            ],
        )
        fromCommandLine = buildConfig(
            {"listen": LISTEN, "check": "tcp", "check-rise": 5},
            {"backend": ["a:1"]},
        )
        self.assertEqual(
            fromCommandLine.backends[0].check, HealthCheckConfig(kind="tcp", rise=5)
        )

    def test_turnOff(self) -> None:
        """
        C{--send-proxy none} and an empty C{--accept-proxy} undo the file's
        settings.
        """
        config = buildConfig(
            minimal(send_proxy="v2", accept_proxy=["10.0.0.0/8"]),
            {"send-proxy": "none", "accept-proxy": ""},
        )
        self.assertEqual((config.sendProxy, config.acceptProxy), (None, ()))

    def test_commandLineLabels(self) -> None:
        """
        Errors in command-line settings name the option with its dashes.
        """
        self.assertFails(
            minimal(),
            "--retries: expected an integer from 0 to 10, got 12",
            {"retries": 12},
        )
        self.assertFails(minimal(), "--colour: unknown option", {"colour": "red"})
        self.assertFails(
            minimal(),
            '--check: "tcp 1": a tcp check takes no arguments',
            {"check": "tcp 1"},
        )
        self.assertFails(
            minimal(),
            '--backend: "a:1" is given twice',
            {"backend": ["a:1", "a:1"]},
        )
        self.assertFails(
            minimal(),
            "no backend: give --backend ENDPOINT (or [[backend]] tables in the "
            "configuration file)",
            {"backend": []},
        )


class ListenEndpointTests(ConfigErrorAssertions):
    """
    Listen strings are checked by parsing them, without listening.
    """

    def assertListenFails(self, description: str, message: str) -> None:
        """
        C{--listen description} is refused with C{message}.
        """
        self.assertFails({}, message, {"listen": [description], "backend": BACKEND})

    def listen(self, *descriptions: str) -> tuple[str, ...]:
        """
        The listen endpoints of a configuration built from C{descriptions}.
        """
        return buildConfig(
            {}, {"listen": list(descriptions), "backend": BACKEND}
        ).listen

    def test_valid(self) -> None:
        """
        TCP, TCP6 and unix strings are accepted and kept as written.
        """
        descriptions = (
            "tcp:8080",
            "tcp:0:interface=127.0.0.1",
            r"tcp6:8443:interface=\:\:1",
            "unix:/run/tlbalance.sock:mode=660",
        )
        self.assertEqual(self.listen(*descriptions), descriptions)

    def test_ssl(self) -> None:
        """
        An C{ssl:} string whose key file exists is accepted; a missing key
        file fails start-up naming the file.
        """
        pem = writeFile(self, selfSignedPEM(), "server.pem")
        description = f"ssl:8443:privateKey={quoteEndpointArgument(pem)}"
        self.assertEqual(self.listen(description), (description,))
        missing = os.path.join(temporaryDirectory(self), "nope.pem")
        bad = f"ssl:8443:privateKey={quoteEndpointArgument(missing)}"
        self.assertListenFails(
            bad,
            f'--listen: "{bad}" is not a valid server endpoint: [Errno 2] No '
            f"such file or directory: '{missing}'",
        )

    def test_systemd(self) -> None:
        """
        A C{systemd:} string naming a socket systemd passed is accepted; one
        naming a socket it did not pass fails with a hint.
        """
        self.patch(_SystemdParser, "_sddaemon", ListenFDs([3], ["web"]))
        self.assertEqual(
            self.listen("systemd:domain=INET:name=web"),
            ("systemd:domain=INET:name=web",),
        )
        self.assertListenFails(
            "systemd:domain=INET:name=api",
            '--listen: "systemd:domain=INET:name=api" is not a valid server '
            "endpoint: systemd passed no such socket (is the .socket unit "
            "active, and does its FileDescriptorName match?)",
        )

    def test_tlsni(self) -> None:
        """
        C{tlsni:} strings are checked fully: C{certdir=} must be there, the
        inner endpoint valid, and the certificate directory loadable, so a
        bad certificate stops start-up with one line naming the problem.
        """
        certificates = os.path.join(temporaryDirectory(self), "certs")
        os.mkdir(certificates)
        with open(os.path.join(certificates, "a.pem"), "wb") as f:
            f.write(makeAuthority().issue("a.example.com").combinedPEM())
        good = f"tlsni:certdir={certificates}:strict=yes:tcp:8443"
        self.assertEqual(self.listen(good), (good,))
        missing = os.path.join(certificates, "missing")
        with self.assertRaises(ConfigError) as caught:
            self.listen(f"tlsni:certdir={missing}:tcp:8443")
        self.assertIn(missing, str(caught.exception))
        self.assertIn("is not a valid server endpoint", str(caught.exception))
        self.assertListenFails(
            "tlsni:tcp:443",
            '--listen: "tlsni:tcp:443": tlsni needs certdir=DIRECTORY (a '
            "directory of PEM files)",
        )
        self.assertListenFails(
            "tlsni:certdir=/etc/certs",
            '--listen: "tlsni:certdir=/etc/certs": tlsni needs an endpoint to '
            "wrap, as in tlsni:certdir=/etc/certs:tcp:443",
        )
        self.assertListenFails(
            "tlsni:certdir=/etc/certs:tcp:https",
            '--listen: "tcp:https" is not a valid server endpoint: invalid '
            "literal for int() with base 10: 'https'",
        )

    def test_invalid(self) -> None:
        """
        Unknown types, bad options and impossible ports fail start-up with
        the option and the string in the message.
        """
        self.assertListenFails(
            "tpc:80",
            '--listen: "tpc:80" is not a valid server endpoint: Unknown '
            "endpoint type: 'tpc'",
        )
        self.assertListenFails(
            "tcp:80:backlogg=5",
            '--listen: "tcp:80:backlogg=5" is not a valid server endpoint: '
            "_parseTCP() got an unexpected keyword argument 'backlogg'",
        )
        self.assertListenFails(
            "tcp:interface=127.0.0.1",
            '--listen: "tcp:interface=127.0.0.1": no port given, as in tcp:8080',
        )
        self.assertListenFails(
            "tcp:80800",
            '--listen: "tcp:80800": the port must be from 0 to 65535, got 80800',
        )
        self.assertListenFails(
            "",
            "--listen: \"\" is not a valid server endpoint: Unknown endpoint type: ''",
        )

    def test_fileLabel(self) -> None:
        """
        A bad listen string from the file is reported under the file's key.
        """
        self.assertFails(
            {"listen": ["tcp:80", "tpc:81"], "backend": BACKEND},
            'listen: "tpc:81" is not a valid server endpoint: Unknown '
            "endpoint type: 'tpc'",
        )


class BackendEndpointTests(ConfigErrorAssertions):
    """
    Backend strings: client endpoint strings, plus HOST:PORT and path
    shorthands.
    """

    def backend(self, text: str) -> BackendConfig:
        """
        The backend built from C{--backend text}.
        """
        return buildConfig({}, {"listen": LISTEN, "backend": [text]}).backends[0]

    def assertBackendFails(self, text: str, message: str) -> None:
        """
        C{--backend text} is refused with C{message}.
        """
        self.assertFails({}, message, {"listen": LISTEN, "backend": [text]})

    def test_endpointStrings(self) -> None:
        """
        Client endpoint strings are kept as written, and name the backend.
        """
        for description in [
            "tcp:host=10.0.0.1:port=8080",
            "tcp:example.com:80",
            "unix:path=/run/app.sock",
            "ssl:host=example.com:port=443",
            "tls:example.com:443",
        ]:
            backend = self.backend(description)
            self.assertEqual(
                (backend.endpoint, backend.name), (description, description)
            )
        # Twisted's own ssl: parsing may warn with some pyOpenSSL versions;
        # the configuration code itself must not.
        ours = [w for w in self.flushWarnings() if "tlbalance" in w["filename"]]
        self.assertEqual(ours, [])

    def test_hostPort(self) -> None:
        """
        C{HOST:PORT} becomes a TCP endpoint string; the backend keeps the
        short form as its name.
        """
        for text, endpoint in [
            ("web1:8080", "tcp:host=web1:port=8080"),
            ("10.0.0.7:80", "tcp:host=10.0.0.7:port=80"),
            ("api.example.com:443", "tcp:host=api.example.com:port=443"),
            ("[::1]:8080", r"tcp:host=\:\:1:port=8080"),
            ("[2001:DB8::7]:80", r"tcp:host=2001\:db8\:\:7:port=80"),
        ]:
            backend = self.backend(text)
            self.assertEqual((backend.endpoint, backend.name), (endpoint, text))
        self.assertEqual(
            parseEndpointString(self.backend("[::1]:8080").endpoint)[1],
            {"host": "::1", "port": "8080"},
        )

    def test_path(self) -> None:
        """
        An absolute path becomes a unix endpoint string, escaping colons.
        """
        backend = self.backend("/run/app:1.sock")
        self.assertEqual(backend.endpoint, r"unix:path=/run/app\:1.sock")
        self.assertEqual(
            parseEndpointString(backend.endpoint)[1], {"path": "/run/app:1.sock"}
        )
        self.assertEqual(backend.name, "/run/app:1.sock")

    def test_typeNamesAreNotHosts(self) -> None:
        """
        C{tcp:8080} is a broken endpoint string, not host C{tcp} port 8080.
        """
        self.assertBackendFails(
            "tcp:8080",
            '--backend: "tcp:8080": no port given, as in tcp:host=HOST:port=PORT '
            "or HOST:PORT",
        )

    def test_invalid(self) -> None:
        """
        Unknown types, bad ports, bad IPv6 addresses and missing files fail
        start-up naming the option and the string.
        """
        self.assertBackendFails(
            "web1",
            '--backend: "web1" is not a valid client endpoint: Unknown endpoint '
            "type: 'web1' (expected e.g. tcp:host=HOST:port=PORT, HOST:PORT, "
            "unix:path=PATH or /PATH)",
        )
        self.assertBackendFails(
            "tls:example.com",
            '--backend: "tls:example.com": no port given, as in '
            "tcp:host=HOST:port=PORT or HOST:PORT",
        )
        self.assertBackendFails(
            "web1:70000",
            '--backend: "web1:70000": the port must be from 1 to 65535, got 70000',
        )
        self.assertBackendFails(
            "tcp:host=web1:port=0",
            '--backend: "tcp:host=web1:port=0": the port must be from 1 to '
            "65535, got 0",
        )
        self.assertBackendFails(
            "[1::2::3]:80",
            '--backend: "[1::2::3]:80": "1::2::3" is not an IPv6 address',
        )
        self.assertBackendFails(
            "",
            '--backend: expected a client endpoint string, got ""',
        )
        missing = os.path.join(temporaryDirectory(self), "cas")
        for bad in [
            f"ssl:host=example.com:port=443:caCertsDir={missing}",
            f"tls:example.com:443:trustRoots={missing}",
        ]:
            self.assertBackendFails(
                bad,
                f'--backend: "{bad}" is not a valid client endpoint: [Errno 2] '
                f"No such file or directory: '{missing}'",
            )

    def test_fileLabel(self) -> None:
        """
        A bad endpoint in a C{[[backend]]} table is reported under its key.
        """
        self.assertFails(
            {"listen": LISTEN, "backend": [{"endpoint": "a:1"}, {"endpoint": "b"}]},
            'backend[1].endpoint: "b" is not a valid client endpoint: Unknown '
            "endpoint type: 'b' (expected e.g. tcp:host=HOST:port=PORT, "
            "HOST:PORT, unix:path=PATH or /PATH)",
        )


class CommandLineSettingTests(SynchronousTestCase):
    """
    L{parseSetting} and L{describeSetting} serve the command line.
    """

    def testparseEndpointString(self) -> None:
        """
        Command-line text becomes the setting's value.
        """
        for key, text, value in [
            ("retries", "3", 3),
            ("client-timeout", "1.5", 1.5),
            ("client-timeout", "0", 0.0),
            ("algorithm", "LeastConn", "leastconn"),
            ("send-proxy", "none", None),
            ("accept-proxy", "10.0.0.0/8,unix", ("10.0.0.0/8", "unix")),
            ("check-rise", "4", 4),
        ]:
            self.assertEqual(parseSetting(key, text), value, key)

    def test_parseErrors(self) -> None:
        """
        Text that does not fit names the option and quotes the text.
        """
        for key, text, message in [
            ("retries", "x", '--retries: expected an integer from 0 to 10, got "x"'),
            (
                "retries",
                "2.5",
                '--retries: expected an integer from 0 to 10, got "2.5"',
            ),
            (
                "drain-timeout",
                "inf",
                '--drain-timeout: expected a number of seconds >= 0, got "inf"',
            ),
            (
                "connect-timeout",
                "5s",
                '--connect-timeout: expected a number of seconds > 0, got "5s"',
            ),
            (
                "algorithm",
                "fast",
                "--algorithm: expected one of roundrobin, leastconn, source, "
                'random, got "fast"',
            ),
        ]:
            error = self.assertRaises(ConfigError, parseSetting, key, text)
            self.assertEqual(str(error), message)

    def test_flagsTakeNoText(self) -> None:
        """
        C{proxy-crc32c} is a flag, so it has no text to parse.
        """
        self.assertRaises(KeyError, parseSetting, "proxy-crc32c", "yes")

    def test_describe(self) -> None:
        """
        Each setting's range is described in a sentence for C{--help}.
        """
        self.assertEqual(describeSetting("retries"), "An integer from 0 to 10.")
        self.assertEqual(describeSetting("connect-timeout"), "A number of seconds > 0.")
        self.assertEqual(describeSetting("send-proxy"), "One of v1, v2, none.")


class SessionDaemonSettingTests(ConfigErrorAssertions):
    """
    C{sessions}, C{secret-file} and C{sessions-insecure} ask for the
    tlsession daemon to be hosted in the balancer. The configuration checks
    their shape and hands them to the daemon's own rules, which it does not
    know (C{twistd tlbalance} passes them).
    """

    def secretFile(self) -> str:
        """
        A secret file's path.
        """
        return writeFile(self, "a-secret-of-enough-length\n", name="secret")

    def checked(
        self,
        fileValues: Mapping[str, Any],
        overrides: Optional[Mapping[str, Any]] = None,
    ) -> tuple[BalancerConfig, list[SessionDaemonSettings]]:
        """
        Build a configuration with a daemon check that records what it is
        given and accepts it.
        """
        seen: list[SessionDaemonSettings] = []
        config = buildConfig(fileValues, overrides, seen.append)
        return config, seen

    def test_noneByDefault(self) -> None:
        """
        Without C{sessions}, no daemon is hosted and its rules are not
        asked.
        """
        config, seen = self.checked(minimal())
        self.assertEqual(
            (config.sessions, config.secretFile, config.sessionsInsecure),
            ((), None, False),
        )
        self.assertEqual(seen, [])

    def test_fromFile(self) -> None:
        """
        Settings from the file are kept as written, the secret file's path
        made absolute, and the daemon's rules get them with the file's
        names for them.
        """
        path = self.secretFile()
        relative = os.path.relpath(path)
        config, seen = self.checked(
            minimal(
                sessions=["unix:/run/tls.sock"],
                secret_file=relative,
                sessions_insecure=True,
            )
        )
        self.assertEqual(
            (config.sessions, config.secretFile, config.sessionsInsecure),
            (("unix:/run/tls.sock",), path, True),
        )
        self.assertEqual(
            seen,
            [
                SessionDaemonSettings(
                    listen=("unix:/run/tls.sock",),
                    secretFile=path,
                    insecure=True,
                    listenLabel="sessions",
                    secretLabel="secret-file",
                    insecureFlag="sessions-insecure = true",
                )
            ],
        )

    def test_fromCommandLine(self) -> None:
        """
        From the command line, the daemon's rules get the options' names.
        """
        path = self.secretFile()
        config, seen = self.checked(
            minimal(), {"sessions": ["tcp:7100"], "secret-file": path}
        )
        self.assertEqual(config.sessions, ("tcp:7100",))
        self.assertEqual(
            seen,
            [
                SessionDaemonSettings(
                    listen=("tcp:7100",),
                    secretFile=path,
                    insecure=False,
                    listenLabel="--sessions",
                    secretLabel="--secret-file",
                    insecureFlag="--sessions-insecure",
                )
            ],
        )

    def test_daemonRulesReportedWithTheRest(self) -> None:
        """
        What the daemon's rules refuse is reported with the configuration's
        other problems, in one error.
        """

        def refuse(settings: SessionDaemonSettings) -> None:
            raise ConfigError(
                f"{settings.listenLabel}: not private",
                f"{settings.secretLabel}: readable by others",
            )

        error = self.assertRaises(
            ConfigError,
            buildConfig,
            minimal(
                retries=-1,
                sessions=["tcp:7100"],
                secret_file=self.secretFile(),
            ),
            None,
            refuse,
        )
        self.assertEqual(
            error.problems,
            (
                "retries: expected an integer from 0 to 10, got -1",
                "sessions: not private",
                "secret-file: readable by others",
            ),
        )

    def test_daemonRulesNotAskedAboutBadShapes(self) -> None:
        """
        The daemon's rules are not asked when the settings' shape is wrong,
        or C{sessions-insecure} is: they would only add a confusing
        problem.
        """
        seen: list[SessionDaemonSettings] = []
        self.assertRaises(
            ConfigError,
            buildConfig,
            minimal(sessions=["tpc:1"], secret_file=self.secretFile()),
            None,
            seen.append,
        )
        self.assertRaises(
            ConfigError,
            buildConfig,
            minimal(
                sessions=["unix:/a.sock"],
                secret_file=self.secretFile(),
                sessions_insecure="yes",
            ),
            None,
            seen.append,
        )
        self.assertEqual(seen, [])

    def test_needsEachOther(self) -> None:
        """
        C{sessions} without a secret file, and a secret file without
        C{sessions}, are refused.
        """
        self.assertFails(
            minimal(sessions="unix:/run/tls.sock"),
            "sessions: the session daemon needs --secret-file FILE (the secret "
            "its clients log in with)",
        )
        self.assertFails(
            minimal(),
            "--secret-file: only used with --sessions ENDPOINT (the session "
            "daemon the balancer can host)",
            {"secret-file": self.secretFile()},
        )

    def test_badSecretFileName(self) -> None:
        """
        A secret file that is not a file name is refused.
        """
        self.assertFails(
            minimal(sessions=["unix:/run/tls.sock"], secret_file=3),
            "secret-file: expected a file name, got 3",
        )

    def test_badEndpoints(self) -> None:
        """
        Endpoints that do not parse, or appear twice, are refused, each.
        """
        path = self.secretFile()
        self.assertFails(
            minimal(sessions=["tpc:80", "tcp:99999"], secret_file=path),
            'sessions: "tpc:80" is not a valid server endpoint: Unknown endpoint '
            "type: 'tpc'\n"
            'sessions: "tcp:99999": the port must be from 0 to 65535, got 99999',
        )
        self.assertFails(
            minimal(sessions=["unix:/a.sock", "unix:/a.sock"], secret_file=path),
            'sessions: "unix:/a.sock" is given twice',
        )
        self.assertFails(
            minimal(sessions=[7100], secret_file=path),
            "sessions: expected a list of server endpoint strings, got [7100]",
        )


class EveryProblemTests(ConfigErrorAssertions):
    """
    Every problem of a configuration is reported at once, one line each, so
    that a file with several mistakes takes one run to fix.
    """

    def test_severalSettings(self) -> None:
        """
        Problems in separate settings are listed in the file's order, then
        the command line's.
        """
        error = self.assertRaises(
            ConfigError,
            buildConfig,
            minimal(algorithm="fastest", client_timout=5, retries=11),
            {"drain-timeout": -1},
        )
        self.assertEqual(
            error.problems,
            (
                "algorithm: expected one of roundrobin, leastconn, source, random, "
                'got "fastest"',
                "client-timout: unknown setting; did you mean client-timeout?",
                "retries: expected an integer from 0 to 10, got 11",
                "--drain-timeout: expected a number of seconds >= 0, got -1",
            ),
        )
        self.assertEqual(str(error), "\n".join(error.problems))

    def test_severalInOneBackend(self) -> None:
        """
        Each key of a backend is checked on its own, and every backend is.
        """
        self.assertFails(
            minimal(
                backend=[
                    {"endpoint": "a:1", "weight": 300, "bakup": True},
                    {"endpoint": "b", "maxconn": -1},
                    {"name": "c"},
                ]
            ),
            "backend[0].weight: expected an integer from 0 to 256, got 300\n"
            "backend[0].bakup: unknown setting; did you mean backup?\n"
            'backend[1].endpoint: "b" is not a valid client endpoint: Unknown '
            "endpoint type: 'b' (expected e.g. tcp:host=HOST:port=PORT, "
            "HOST:PORT, unix:path=PATH or /PATH)\n"
            "backend[1].maxconn: expected an integer >= 0, got -1\n"
            "backend[2]: missing endpoint (a client endpoint string)",
        )

    def test_defaultCheckOnce(self) -> None:
        """
        A wrong default check is reported once, not once per backend that
        would use it, and does not make their check settings look unused.
        """
        self.assertFails(
            minimal(
                check="ping",
                backend=[{"endpoint": "a:1", "check-rise": 1}, "b:2"],
            ),
            'check: "ping": unknown kind of check "ping"; expected "tcp", '
            '"http [METHOD] [/PATH] [STATUS]" or "none"',
        )

    def test_wrongCheckDefault(self) -> None:
        """
        A wrong check default is reported once too, and the check still
        gets checked.
        """
        self.assertFails(
            minimal(check="http GET health", check_inter=0),
            "check-inter: expected a number of seconds > 0, got 0\n"
            'check: "http GET health": unexpected "health"; expected "tcp", '
            '"http [METHOD] [/PATH] [STATUS]" or "none"',
        )

    def test_severalListeners(self) -> None:
        """
        Every listen string is checked.
        """
        self.assertFails(
            minimal(listen=["tpc:1", "tcp:80", "tcp:80", "tcp:70000"]),
            'listen: "tpc:1" is not a valid server endpoint: Unknown endpoint '
            "type: 'tpc'\n"
            'listen: "tcp:80" is given twice\n'
            'listen: "tcp:70000": the port must be from 0 to 65535, got 70000',
        )


class StatsSettingTests(ConfigErrorAssertions):
    """
    C{stats} (C{--stats}): the stats listeners' server endpoint strings.
    """

    def test_list(self) -> None:
        """
        A list (or one string) of endpoint strings is kept as written; none
        is the default.
        """
        self.assertEqual(buildConfig(minimal()).stats, ())
        self.assertEqual(
            buildConfig(minimal(stats=["tcp:8404", "unix:/run/stats.sock"])).stats,
            ("tcp:8404", "unix:/run/stats.sock"),
        )
        self.assertEqual(buildConfig(minimal(stats="tcp:8404")).stats, ("tcp:8404",))

    def test_commandLineWins(self) -> None:
        """
        C{--stats} replaces the file's list.
        """
        config = buildConfig(minimal(stats=["tcp:8404"]), {"stats": ["tcp:9404"]})
        self.assertEqual(config.stats, ("tcp:9404",))

    def test_bad(self) -> None:
        """
        A string that is no server endpoint, one given twice, or a value
        that is no list fails start-up naming the option or key.
        """
        error = self.assertRaises(
            ConfigError, buildConfig, minimal(), {"stats": ["nope:1"]}
        )
        self.assertTrue(str(error).startswith('--stats: "nope:1"'), str(error))
        self.assertFails(
            minimal(stats=["tcp:1", "tcp:1"]), 'stats: "tcp:1" is given twice'
        )
        self.assertFails(
            minimal(stats=3), "stats: expected a list of server endpoint strings, got 3"
        )


class ListenBacklogTests(SynchronousTestCase):
    """
    Listeners get a listen queue of L{DEFAULT_BACKLOG} unless their
    endpoint string sets one: Twisted's default of 50 overflows in a burst
    of connects.
    """

    def backlogOf(self, description: str) -> int:
        """
        The backlog a listener on C{withListenBacklog(description)} asks the
        kernel for.
        """
        reactor = MemoryReactor()
        endpoint = serverFromString(reactor, withListenBacklog(description))
        endpoint.listen(Factory.forProtocol(Protocol))
        if reactor.tcpServers:
            backlog: int = reactor.tcpServers[0][2]
        elif reactor.unixServers:
            backlog = reactor.unixServers[0][2]
        else:
            backlog = reactor.sslServers[0][3]
        return backlog

    def test_default(self) -> None:
        """
        Every endpoint type that takes a backlog gets 511, also inside the
        C{tlsni:} and C{tlproxy:} wrappers, and the rest of the string
        keeps its meaning.
        """
        self.assertEqual(DEFAULT_BACKLOG, 511)
        certificates = temporaryDirectory(self)
        with open(os.path.join(certificates, "a.pem"), "wb") as f:
            f.write(makeAuthority().issue("a.example.com").combinedPEM())
        pem = writeFile(self, selfSignedPEM(), "server.pem")
        socketPath = os.path.join(temporaryDirectory(self), "lb.sock")
        descriptions = [
            "tcp:8080",
            r"tcp6:8080:interface=\:\:1",
            f"unix:{socketPath}:mode=660",
            f"ssl:8443:privateKey={quoteEndpointArgument(pem)}",
            f"tlsni:certdir={certificates}:tcp:8443",
            "tlproxy:trusted=10.0.0.0/8:tcp:8080",
            f"tlproxy:trusted=unix:tlsni:certdir={certificates}:unix:{socketPath}",
        ]
        twistedTLS = f"tls:{certificates}:port=8443"
        try:
            serverFromString(MemoryReactor(), twistedTLS)
        except ValueError:
            pass  # Twisted's tls: server endpoint came after 25.5, the floor
        else:
            descriptions.append(twistedTLS)
        for description in descriptions:
            self.assertEqual(self.backlogOf(description), 511, description)

    def test_given(self) -> None:
        """
        A backlog in the endpoint string is the user's choice and stays.
        """
        for description in [
            "tcp:8080:backlog=1024",
            "tlproxy:trusted=10.0.0.0/8:tcp:8080:backlog=1024",
        ]:
            self.assertEqual(withListenBacklog(description), description)
            self.assertEqual(self.backlogOf(description), 1024, description)

    def test_noBacklogOption(self) -> None:
        """
        A C{systemd:} socket arrives listening, with the backlog its
        C{.socket} unit gave it: the string is left as it is.
        """
        description = "systemd:domain=INET:index=0"
        self.assertEqual(withListenBacklog(description), description)


class ControlSettingTests(ConfigErrorAssertions):
    """
    C{control} (C{--control}): the runtime API's unix socket path.
    """

    def test_absolute(self) -> None:
        """
        A relative path is made absolute, as twistd may change directory.
        """
        config = buildConfig(minimal(control="run/control.sock"))
        self.assertEqual(config.control, os.path.abspath("run/control.sock"))

    def test_none(self) -> None:
        """
        Without the setting there is no control socket.
        """
        self.assertIsNone(buildConfig(minimal()).control)

    def test_notAPath(self) -> None:
        """
        A value that is no path is refused, naming the key or option.
        """
        self.assertFails(
            minimal(control=3), "control: expected the path of a unix socket, got 3"
        )
        self.assertFails(
            minimal(),
            '--control: expected the path of a unix socket, got " "',
            {"control": " "},
        )
