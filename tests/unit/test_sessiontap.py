"""
Tests for L{tlsession.tap}: the C{twistd tlsession} command line, in
process. (The real C{twistd} runs in
L{tests.integration.test_session_daemon_twistd}.)
"""

from __future__ import annotations

import builtins
import sys

from twisted.internet.task import Clock
from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_daemonconfig import writeSecret
from tlsession.daemon import SessionDaemonService
from tlsession.daemonconfig import DaemonConfig, makeDaemonService
from tlsession.tap import Options, makeService


class OptionsTests(SynchronousTestCase):
    """
    The C{twistd tlsession} command line.
    """

    def parse(self, *arguments: str) -> DaemonConfig:
        """
        Parse C{arguments} and return the configuration.
        """
        options = Options()
        options.parseOptions(list(arguments))
        config: DaemonConfig = options["config"]
        return config

    def test_everyOption(self) -> None:
        """
        Every option reaches the configuration; C{--listen} repeats.
        """
        path = writeSecret(self)
        config = self.parse(
            "--listen",
            "unix:/tmp/one.sock",
            "--listen=tcp:7100:interface=127.0.0.1",
            "--secret-file",
            path,
            "--max-sessions=10",
            "--max-bytes=100000",
            "--max-value-bytes=2000",
            "--idle-timeout=30",
            "--absolute-timeout=600",
            "--stats-interval=0",
            "--max-connections=200",
            "--max-unauthenticated=50",
            "--max-unauthenticated-per-address=4",
            "--login-timeout=2.5",
            "--insecure",
        )
        self.assertEqual(
            config,
            DaemonConfig(
                ("unix:/tmp/one.sock:mode=600", "tcp:7100:interface=127.0.0.1"),
                path,
                maxSessions=10,
                maxBytes=100000,
                maxValueBytes=2000,
                idleTimeout=30.0,
                absoluteTimeout=600.0,
                statsInterval=0.0,
                maxConnections=200,
                maxUnauthenticated=50,
                maxUnauthenticatedPerAddress=4,
                loginTimeout=2.5,
                insecure=True,
            ),
        )

    def test_defaults(self) -> None:
        """
        Without limits, the defaults apply.
        """
        config = self.parse(
            "--listen", "unix:/tmp/a.sock", "--secret-file", writeSecret(self)
        )
        self.assertEqual(
            (
                config.maxSessions,
                config.maxBytes,
                config.maxValueBytes,
                config.idleTimeout,
                config.absoluteTimeout,
                config.statsInterval,
                config.insecure,
                config.maxConnections,
                config.maxUnauthenticated,
                config.maxUnauthenticatedPerAddress,
                config.loginTimeout,
            ),
            (100_000, 256 * 2**20, 65536, 1800.0, 86400.0, 60.0, False)
            + (1000, None, 16, 5.0),
        )
        service = makeDaemonService(config, Clock())
        self.assertEqual(
            (
                service.factory.maxConnections,
                service.factory.maxUnauthenticated,
                service.factory.maxUnauthenticatedPerAddress,
                service.factory.loginTimeout,
            ),
            (1000, 100, 16, 5.0),
        )

    def test_errors(self) -> None:
        """
        Each mistake stops start-up with one line naming it (not the usage
        text): plain TCP without C{--insecure}, a secret others can read, no
        secret file, a number that is not one, an unknown option.
        """
        path = writeSecret(self)
        loose = writeSecret(self, mode=0o644)
        for arguments, message in [
            (
                ["--listen", "tcp:7100", "--secret-file", path],
                "'tcp:7100': the session daemon would send its login (an MD5 "
                "challenge) and every session unencrypted; listen on unix:PATH "
                "or ssl:..., or pass --insecure to allow it on a private network",
            ),
            (
                ["--listen", "unix:/tmp/a.sock", "--secret-file", loose],
                f"{loose}: the secret file is accessible by its group or others "
                f"(mode 0644); make it private with: chmod 600 {loose}",
            ),
            (
                ["--listen", "unix:/tmp/a.sock"],
                "no secret: give --secret-file FILE (one line the clients know too)",
            ),
            (
                [
                    "--listen",
                    "unix:/tmp/a.sock",
                    "--secret-file",
                    path,
                    "--max-bytes",
                    "lots",
                ],
                "--max-bytes: expected an integer, got 'lots'",
            ),
            (
                ["--listen", "unix:/tmp/a.sock", "--nope"],
                "option --nope not recognized (twistd tlsession --help lists "
                "the options)",
            ),
        ]:
            error = self.assertRaises(SystemExit, Options().parseOptions, arguments)
            self.assertEqual(error.code, f"twistd tlsession: {message}")

    def test_help(self) -> None:
        """
        The help names every option and gives an example.
        """
        text = " ".join(str(Options()).split())
        for name in [
            "listen",
            "secret-file",
            "max-sessions",
            "max-bytes",
            "max-value-bytes",
            "idle-timeout",
            "absolute-timeout",
            "stats-interval",
            "max-connections",
            "max-unauthenticated",
            "max-unauthenticated-per-address",
            "login-timeout",
            "insecure",
        ]:
            self.assertIn(f"--{name}", text)
        self.assertIn("Example: twistd -n tlsession --listen unix:", text)

    def test_twistdSubCommand(self) -> None:
        """
        C{twistd tlsession} finds the plugin and hands it the arguments.
        """
        options = ServerOptions()
        options.parseOptions(
            [
                "tlsession",
                "--listen",
                "unix:/tmp/a.sock",
                "--secret-file",
                writeSecret(self),
            ]
        )
        self.assertEqual(options.subCommand, "tlsession")
        self.assertEqual(
            options.subOptions["config"].listen, ("unix:/tmp/a.sock:mode=600",)
        )

    def test_makeService(self) -> None:
        """
        The service listens where configured and keeps sessions within the
        configured limits.
        """
        options = Options()
        options.parseOptions(
            [
                "--listen",
                "unix:/tmp/a.sock",
                "--listen",
                "unix:/tmp/b.sock:mode=660",
                "--secret-file",
                writeSecret(self),
                "--max-sessions",
                "7",
                "--max-value-bytes",
                "100",
                "--idle-timeout",
                "5",
                "--max-connections",
                "300",
                "--login-timeout",
                "3",
            ]
        )
        # makeService installs the start-up error hook; keep it to this test.
        self.patch(sys, "excepthook", sys.excepthook)
        service = makeService(options)
        assert isinstance(service, SessionDaemonService)
        self.assertEqual(
            [listener.description for listener in service.listeners],
            ["unix:/tmp/a.sock:mode=600", "unix:/tmp/b.sock:mode=660"],
        )
        self.assertEqual(
            (
                service.store.maxSessions,
                service.store.maxValueBytes,
                service.store.idleTimeout,
            ),
            (7, 100, 5.0),
        )
        self.assertEqual(
            (
                service.factory.maxConnections,
                service.factory.maxUnauthenticated,
                service.factory.loginTimeout,
            ),
            (300, 30, 3.0),
        )

    def test_version(self) -> None:
        """
        C{--version} prints the suite's version under the plugin's name.
        """
        from tlsuite import __version__

        printed: list[str] = []
        self.patch(builtins, "print", lambda *args: printed.append(" ".join(args)))
        error = self.assertRaises(SystemExit, Options().parseOptions, ["--version"])
        self.assertEqual(error.code, 0)
        self.assertEqual(printed, [f"tlsession {__version__}"])
