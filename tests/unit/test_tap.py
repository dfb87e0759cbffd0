"""
Tests for L{tlbalance.tap}: the C{twistd tlbalance} command line.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from io import BytesIO, StringIO
from typing import Any, Callable

from twisted.python import _shellcomp
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from tlbalance.config import BackendConfig, BalancerConfig, HealthCheckConfig
from tlbalance.service import BalancerService
from tlbalance.tap import Options, makeService
from tlsuite import __version__

REQUIRED = ["--listen", "tcp:8080", "--backend", "127.0.0.1:8081"]

EVERY_OPTION = [
    "listen",
    "backend",
    "algorithm",
    "send-proxy",
    "proxy-crc32c",
    "dontlog-normal",
    "accept-proxy",
    "proxy-header-timeout",
    "connect-timeout",
    "client-timeout",
    "server-timeout",
    "first-byte-timeout",
    "retries",
    "fail-timeout",
    "drain-timeout",
    "pending-buffer-bytes",
    "check",
    "check-inter",
    "check-rise",
    "check-fall",
    "check-timeout",
    "config",
    "sessions",
    "secret-file",
    "sessions-insecure",
    "tls-ciphers",
    "stats",
    "control",
    "check-config",
    "takeover",
]


def parse(*arguments: str) -> BalancerConfig:
    """
    Parse C{twistd tlbalance} arguments and return the configuration.
    """
    options = Options()
    options.parseOptions(list(arguments))
    config: BalancerConfig = options["config"]
    return config


def writeConfigFile(testCase: SynchronousTestCase, text: str) -> str:
    """
    Write a TOML file in a fresh directory removed after the test.
    """
    directory = tempfile.mkdtemp(prefix="tlbalance-test-")
    testCase.addCleanup(shutil.rmtree, directory)
    path = os.path.join(directory, "tlbalance.toml")
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class OptionsTests(SynchronousTestCase):
    """
    Each option of L{Options} reaches the L{BalancerConfig}.
    """

    def test_minimal(self) -> None:
        """
        One listener and one backend are enough; everything else has its
        default.
        """
        self.assertEqual(
            parse(*REQUIRED),
            BalancerConfig(
                listen=("tcp:8080",),
                backends=(
                    BackendConfig("tcp:host=127.0.0.1:port=8081", "127.0.0.1:8081"),
                ),
            ),
        )

    def test_repeatable(self) -> None:
        """
        C{--listen} and C{--backend} may be given many times; order is kept.
        """
        config = parse(
            "--listen",
            "tcp:8080",
            "--backend",
            "b:2",
            "--listen",
            "unix:/run/lb.sock",
            "--backend",
            "/run/app.sock",
            "--backend",
            "tcp:host=a:port=1",
        )
        self.assertEqual(config.listen, ("tcp:8080", "unix:/run/lb.sock"))
        self.assertEqual(
            [b.endpoint for b in config.backends],
            ["tcp:host=b:port=2", "unix:path=/run/app.sock", "tcp:host=a:port=1"],
        )

    def test_eachOption(self) -> None:
        """
        Every setting option changes exactly its own attribute.
        """
        cases: list[tuple[list[str], Callable[[BalancerConfig], Any], Any]] = [
            (["--algorithm", "leastconn"], lambda c: c.algorithm, "leastconn"),
            (["--algorithm", "source"], lambda c: c.algorithm, "source"),
            (["--algorithm", "random"], lambda c: c.algorithm, "random"),
            (["--send-proxy", "v1"], lambda c: c.sendProxy, "v1"),
            (["--send-proxy", "v2"], lambda c: c.sendProxy, "v2"),
            (["--proxy-crc32c"], lambda c: c.proxyCRC32C, True),
            (["--dontlog-normal"], lambda c: c.dontlogNormal, True),
            (
                ["--accept-proxy", "10.0.0.0/8,::1,unix"],
                lambda c: c.acceptProxy,
                ("10.0.0.0/8", "::1/128", "unix"),
            ),
            (["--proxy-header-timeout", "3"], lambda c: c.proxyHeaderTimeout, 3.0),
            (["--connect-timeout", "1.5"], lambda c: c.connectTimeout, 1.5),
            (["--client-timeout", "0"], lambda c: c.clientTimeout, 0.0),
            (["--server-timeout", "600"], lambda c: c.serverTimeout, 600.0),
            (["--first-byte-timeout", "5"], lambda c: c.firstByteTimeout, 5.0),
            (["--retries", "0"], lambda c: c.retries, 0),
            (["--fail-timeout", "20"], lambda c: c.failTimeout, 20.0),
            (["--drain-timeout", "5"], lambda c: c.drainTimeout, 5.0),
            (
                ["--pending-buffer-bytes", "4096"],
                lambda c: c.pendingBufferBytes,
                4096,
            ),
            (
                ["--check", "http GET /health 204"],
                lambda c: c.backends[0].check,
                HealthCheckConfig(
                    kind="http", method="GET", path="/health", expectStatus=204
                ),
            ),
            (
                ["--check", "tcp", "--check-inter", "0.5"],
                lambda c: c.backends[0].check,
                HealthCheckConfig(kind="tcp", inter=0.5),
            ),
            (
                ["--check", "tcp", "--check-rise", "1"],
                lambda c: c.backends[0].check,
                HealthCheckConfig(kind="tcp", rise=1),
            ),
            (
                ["--check", "tcp", "--check-fall", "5"],
                lambda c: c.backends[0].check,
                HealthCheckConfig(kind="tcp", fall=5),
            ),
            (
                ["--check", "tcp", "--check-timeout", "1"],
                lambda c: c.backends[0].check,
                HealthCheckConfig(kind="tcp", timeout=1.0),
            ),
        ]
        default = parse(*REQUIRED)
        for arguments, attribute, expected in cases:
            config = parse(*REQUIRED, *arguments)
            self.assertEqual(attribute(config), expected, arguments)
            self.assertNotEqual(attribute(default), expected, arguments)

    def test_everyOptionTogether(self) -> None:
        """
        All options at once give the configuration they describe.
        """
        config = parse(
            "--listen=tcp:8080",
            "--listen=tcp6:8080",
            "--backend=web1:80",
            "--backend=web2:80",
            "--algorithm=leastconn",
            "--send-proxy=v2",
            "--proxy-crc32c",
            "--accept-proxy=127.0.0.1",
            "--proxy-header-timeout=4",
            "--connect-timeout=2",
            "--client-timeout=30",
            "--server-timeout=40",
            "--retries=1",
            "--fail-timeout=7",
            "--drain-timeout=9",
            "--pending-buffer-bytes=2048",
            "--check=http /ping",
            "--check-inter=3",
            "--check-rise=4",
            "--check-fall=6",
            "--check-timeout=2.5",
        )
        check = HealthCheckConfig(
            kind="http", path="/ping", inter=3.0, rise=4, fall=6, timeout=2.5
        )
        self.assertEqual(
            config,
            BalancerConfig(
                listen=("tcp:8080", "tcp6:8080"),
                backends=(
                    BackendConfig("tcp:host=web1:port=80", "web1:80", check=check),
                    BackendConfig("tcp:host=web2:port=80", "web2:80", check=check),
                ),
                algorithm="leastconn",
                sendProxy="v2",
                proxyCRC32C=True,
                acceptProxy=("127.0.0.1/32",),
                proxyHeaderTimeout=4.0,
                connectTimeout=2.0,
                clientTimeout=30.0,
                serverTimeout=40.0,
                retries=1,
                failTimeout=7.0,
                drainTimeout=9.0,
                pendingBufferBytes=2048,
            ),
        )

    def test_configFile(self) -> None:
        """
        C{--config} reads a TOML file; options on the command line override
        it, and C{--backend} replaces its backends.
        """
        path = writeConfigFile(
            self,
            'listen = ["tcp:9000"]\n'
            'algorithm = "source"\n'
            "retries = 5\n"
            "[[backend]]\n"
            'endpoint = "a:1"\n'
            'name = "alpha"\n'
            "weight = 3\n",
        )
        fromFile = parse("--config", path)
        self.assertEqual(fromFile.listen, ("tcp:9000",))
        self.assertEqual((fromFile.algorithm, fromFile.retries), ("source", 5))
        self.assertEqual(
            fromFile.backends, (BackendConfig("tcp:host=a:port=1", "alpha", weight=3),)
        )

        overridden = parse("--config", path, "--retries", "1", "--backend", "b:2")
        self.assertEqual(overridden.listen, ("tcp:9000",))
        self.assertEqual((overridden.algorithm, overridden.retries), ("source", 1))
        self.assertEqual([b.name for b in overridden.backends], ["b:2"])


class OptionErrorTests(SynchronousTestCase):
    """
    Bad arguments stop start-up with a message naming the option.
    """

    def assertUsageError(self, arguments: list[str], message: str) -> None:
        """
        Parsing C{arguments} ends the command with C{message}, each of its
        lines after the command's name (and twistd prints no usage text).
        """
        error = self.assertRaises(SystemExit, Options().parseOptions, arguments)
        self.assertEqual(
            error.code,
            "\n".join(f"twistd tlbalance: {line}" for line in message.splitlines()),
        )

    def test_badValues(self) -> None:
        """
        A value out of range or of the wrong kind is refused as soon as it
        is read, naming the option and the range.
        """
        for option, value, expected in [
            ("--algorithm", "fastest", "one of roundrobin, leastconn, source, random"),
            ("--send-proxy", "v3", "one of v1, v2, none"),
            ("--proxy-header-timeout", "0", "a number of seconds > 0"),
            ("--connect-timeout", "soon", "a number of seconds > 0"),
            ("--client-timeout", "-1", "a number of seconds >= 0"),
            ("--server-timeout", "nan", "a number of seconds >= 0"),
            ("--retries", "11", "an integer from 0 to 10"),
            ("--fail-timeout", "-2", "a number of seconds >= 0"),
            ("--drain-timeout", "x", "a number of seconds >= 0"),
            ("--pending-buffer-bytes", "1023", "an integer of bytes >= 1024"),
            ("--check-inter", "0", "a number of seconds > 0"),
            ("--check-rise", "0", "an integer >= 1"),
            ("--check-fall", "1.5", "an integer >= 1"),
            ("--check-timeout", "0", "a number of seconds > 0"),
        ]:
            self.assertUsageError(
                [*REQUIRED, option, value],
                f'{option}: expected {expected}, got "{value}"',
            )

    def test_badPeers(self) -> None:
        """
        An C{--accept-proxy} entry that is not an address, network or
        C{unix} is named.
        """
        self.assertUsageError(
            [*REQUIRED, "--accept-proxy", "10.0.0.0/8,lan"],
            '--accept-proxy: "lan" is not an IP address, a CIDR network or "unix"',
        )

    def test_badCheck(self) -> None:
        """
        A malformed C{--check} is quoted back.
        """
        self.assertUsageError(
            [*REQUIRED, "--check", "ping"],
            '--check: "ping": unknown kind of check "ping"; expected "tcp", '
            '"http [METHOD] [/PATH] [STATUS]" or "none"',
        )

    def test_badEndpoints(self) -> None:
        """
        A listen or backend string that does not parse stops start-up.
        """
        self.assertUsageError(
            ["--listen", "tpc:80", "--backend", "a:1"],
            '--listen: "tpc:80" is not a valid server endpoint: Unknown '
            "endpoint type: 'tpc'",
        )
        self.assertUsageError(
            ["--listen", "tcp:80", "--backend", "a:0"],
            '--backend: "a:0": the port must be from 1 to 65535, got 0',
        )

    def test_missing(self) -> None:
        """
        Without a listener or a backend, the message says what to add.
        """
        self.assertUsageError(
            [],
            "no listen endpoint: give --listen ENDPOINT (or listen = [...] in "
            "the configuration file)\n"
            "no backend: give --backend ENDPOINT (or [[backend]] tables in the "
            "configuration file)",
        )
        self.assertUsageError(
            ["--listen", "tcp:80"],
            "no backend: give --backend ENDPOINT (or [[backend]] tables in the "
            "configuration file)",
        )

    def test_configFileErrors(self) -> None:
        """
        An unreadable file is named; a bad key in it is named too.
        """
        missing = os.path.join(tempfile.gettempdir(), "tlbalance-no-such.toml")
        self.assertUsageError(
            ["--config", missing],
            f"{missing}: cannot read the configuration file: No such file or directory",
        )
        path = writeConfigFile(
            self, '[[backend]]\nendpoint = "a:1"\nweight = "heavy"\n'
        )
        self.assertUsageError(
            ["--config", path, "--listen", "tcp:80"],
            'backend[0].weight: expected an integer from 0 to 256, got "heavy"',
        )

    def test_everyFileMistake(self) -> None:
        """
        Every mistake of a file is reported at once, one line each.
        """
        path = writeConfigFile(
            self,
            'listen = ["tcp:80"]\n'
            'algorithm = "fastest"\n'
            "[[backend]]\n"
            'endpoint = "a:1"\n'
            'weight = "heavy"\n',
        )
        self.assertUsageError(
            ["--config", path],
            "algorithm: expected one of roundrobin, leastconn, source, random, "
            'got "fastest"\n'
            'backend[0].weight: expected an integer from 0 to 256, got "heavy"',
        )

    def test_unknownOption(self) -> None:
        """
        An option that does not exist is named, pointing at C{--help}.
        """
        self.assertUsageError(
            [*REQUIRED, "--bogus"],
            "option --bogus not recognized (twistd tlbalance --help lists the options)",
        )

    def test_version(self) -> None:
        """
        C{--version} prints the suite's version and exits.
        """
        output = StringIO()
        self.patch(sys, "stdout", output)
        error = self.assertRaises(SystemExit, Options().parseOptions, ["--version"])
        self.assertEqual(error.code, 0)
        self.assertEqual(output.getvalue(), f"tlbalance {__version__}\n")


class HelpTests(SynchronousTestCase):
    """
    C{--help} documents every option.
    """

    def test_everyOption(self) -> None:
        """
        Every option appears in the help text.
        """
        text = str(Options())
        for name in EVERY_OPTION:
            self.assertIn(f"--{name}", text)

    def test_rangesAndExample(self) -> None:
        """
        The help gives each option's range and an example command line.
        """
        text = " ".join(str(Options()).split())
        self.assertIn("An integer from 0 to 10.", text)
        self.assertIn("[default: 30]. A number of seconds >= 0.", text)
        self.assertIn(
            "Example: twistd -n tlbalance --listen tcp:8080 --backend 127.0.0.1:8081",
            text,
        )

    def test_completion(self) -> None:
        """
        Shell completion offers the algorithms and PROXY versions, TOML
        files for C{--config}, and repeats C{--listen}/C{--backend}.
        """
        output = BytesIO()
        _shellcomp.shellComplete(Options(), "tlbalance", ["--", "zsh:1"], output)
        script = output.getvalue().decode("utf-8")
        self.assertIn(":algorithm:(roundrobin leastconn source random)", script)
        self.assertIn(":send-proxy:(v1 v2 none)", script)
        self.assertIn('_files -g "*.toml"', script)
        self.assertIn("'*--listen=", script)
        self.assertIn("'*--backend=", script)
        self.assertNotIn(":retries:_files", script)


class TwistdTests(SynchronousTestCase):
    """
    C{twistd tlbalance} finds the plugin and builds the configuration.
    """

    def test_subCommand(self) -> None:
        """
        twistd's own option parser picks the tlbalance plugin and hands it
        the arguments.
        """
        options = ServerOptions()
        options.parseOptions(["tlbalance", *REQUIRED, "--algorithm", "random"])
        self.assertEqual(options.subCommand, "tlbalance")
        config = options.subOptions["config"]
        self.assertEqual(config.algorithm, "random")
        self.assertEqual(config.listen, ("tcp:8080",))
        self.assertEqual(
            [b.endpoint for b in config.backends], ["tcp:host=127.0.0.1:port=8081"]
        )

    def test_subCommandError(self) -> None:
        """
        A configuration problem ends twistd's own parse with the one line,
        rather than a usage error twistd would print under its usage text.
        """
        options = ServerOptions()
        error = self.assertRaises(
            SystemExit, options.parseOptions, ["tlbalance", "--listen", "tcp:80"]
        )
        self.assertEqual(
            error.code,
            "twistd tlbalance: no backend: give --backend ENDPOINT (or "
            "[[backend]] tables in the configuration file)",
        )


class SessionDaemonTests(SynchronousTestCase):
    """
    C{--sessions} and C{--secret-file} host the tlsession daemon inside the
    balancer, checked against the daemon's rules where the options are.
    """

    def secretFile(self, mode: int = 0o600) -> str:
        """
        A secret file with C{mode}, removed after the test.
        """
        directory = tempfile.mkdtemp(prefix="tlbalance-test-")
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "secret")
        with open(path, "w") as f:
            f.write("a-secret-of-enough-length\n")
        os.chmod(path, mode)
        return path

    def options(self, *arguments: str) -> Options:
        """
        Options parsed from C{arguments}.
        """
        options = Options()
        options.parseOptions(list(arguments))
        return options

    def test_options(self) -> None:
        """
        The options reach the configuration as written, and the daemon's
        configuration with its rules applied: a unix socket without a mode
        gets 0600; C{--sessions} repeats.
        """
        path = self.secretFile()
        options = self.options(
            *REQUIRED,
            "--sessions",
            "unix:/tmp/one.sock",
            "--sessions",
            "tcp:7100:interface=10.0.0.1",
            "--sessions-insecure",
            "--secret-file",
            path,
        )
        config = options["config"]
        self.assertEqual(
            config.sessions, ("unix:/tmp/one.sock", "tcp:7100:interface=10.0.0.1")
        )
        self.assertEqual((config.secretFile, config.sessionsInsecure), (path, True))
        daemon = options["sessionDaemon"]
        self.assertEqual(
            daemon.listen,
            ("unix:/tmp/one.sock:mode=600", "tcp:7100:interface=10.0.0.1"),
        )
        self.assertEqual((daemon.secretFile, daemon.insecure), (path, True))

    def test_fromFile(self) -> None:
        """
        The settings may come from the file.
        """
        path = self.secretFile()
        config = writeConfigFile(
            self,
            f'sessions = "unix:/tmp/one.sock:mode=660"\nsecret-file = "{path}"\n',
        )
        options = self.options(*REQUIRED, "--config", config)
        self.assertEqual(
            options["sessionDaemon"].listen, ("unix:/tmp/one.sock:mode=660",)
        )

    def assertExits(self, arguments: list[str], *lines: str) -> None:
        """
        Parsing C{arguments} ends the command with C{lines}.
        """
        error = self.assertRaises(SystemExit, Options().parseOptions, arguments)
        self.assertEqual(
            error.code, "\n".join(f"twistd tlbalance: {line}" for line in lines)
        )

    def test_refused(self) -> None:
        """
        Plain TCP without C{--sessions-insecure}, a secret file others can
        read, and no secret file, stop start-up with the option named,
        every problem at once.
        """
        loose = self.secretFile(0o644)
        self.assertExits(
            [*REQUIRED, "--sessions", "tcp:7100", "--secret-file", loose],
            "--sessions: 'tcp:7100': the session daemon would send its login "
            "(an MD5 challenge) and every session unencrypted; listen on "
            "unix:PATH or ssl:..., or pass --sessions-insecure to allow it on a "
            "private network",
            f"--secret-file: {loose}: the secret file is accessible by its group "
            f"or others (mode 0644); make it private with: chmod 600 {loose}",
        )
        self.assertExits(
            [*REQUIRED, "--sessions", "unix:/a"],
            "--sessions: the session daemon needs --secret-file FILE (the secret "
            "its clients log in with)",
        )

    def test_refusedInFile(self) -> None:
        """
        In the file, the setting that allows plain TCP is named as the file
        writes it.
        """
        config = writeConfigFile(
            self, f'sessions = ["tcp:7100"]\nsecret-file = "{self.secretFile()}"\n'
        )
        self.assertExits(
            [*REQUIRED, "--config", config],
            "sessions: 'tcp:7100': the session daemon would send its login (an "
            "MD5 challenge) and every session unencrypted; listen on unix:PATH "
            "or ssl:..., or pass sessions-insecure = true to allow it on a "
            "private network",
        )

    def test_service(self) -> None:
        """
        The balancer's service hosts the daemon as a child, which listens
        where configured and stops after the balancer has drained.
        """
        from twisted.internet.testing import MemoryReactorClock

        from tlsession.daemon import SessionDaemonService

        options = self.options(
            *REQUIRED,
            "--sessions",
            "unix:/tmp/tlbalance-test-sessions.sock",
            "--secret-file",
            self.secretFile(),
            "--drain-timeout",
            "0",
        )
        reactor = MemoryReactorClock()
        service = makeService(options, reactor)
        assert isinstance(service, BalancerService)
        daemon = service.sessionDaemon
        assert isinstance(daemon, SessionDaemonService)
        self.assertIs(daemon.parent, service)
        service.startService()
        self.assertTrue(daemon.running)
        self.assertEqual(
            [port[0] for port in reactor.unixServers],
            ["/tmp/tlbalance-test-sessions.sock"],
        )
        self.assertEqual(reactor.unixServers[0][3], 0o600)
        self.successResultOf(service.stopService())
        self.assertFalse(daemon.running)

    def test_secretFileGone(self) -> None:
        """
        A secret file that became unreadable between the check and the
        start ends the command with one line.
        """
        from twisted.internet.testing import MemoryReactorClock

        path = self.secretFile()
        options = self.options(
            *REQUIRED, "--sessions", "unix:/tmp/x.sock", "--secret-file", path
        )
        os.remove(path)
        error = self.assertRaises(
            SystemExit, makeService, options, MemoryReactorClock()
        )
        self.assertEqual(
            error.code,
            f"twistd tlbalance: {path}: cannot read the secret file: No such "
            "file or directory",
        )

    def test_noDaemonByDefault(self) -> None:
        """
        Without C{--sessions}, the balancer hosts no daemon.
        """
        from twisted.internet.testing import MemoryReactorClock

        options = self.options(*REQUIRED)
        self.assertIsNone(options["sessionDaemon"])
        service = makeService(options, MemoryReactorClock())
        assert isinstance(service, BalancerService)
        self.assertIsNone(service.sessionDaemon)
