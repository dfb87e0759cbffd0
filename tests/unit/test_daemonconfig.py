"""
Tests for L{tlsession.daemonconfig}: the session daemon's configuration,
its checks (private endpoints, a private secret file, sane limits), and the
daemon it builds.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from tlsession.daemonconfig import (
    DaemonConfig,
    DaemonConfigError,
    checkListenEndpoint,
    makeDaemonService,
    readSecretFile,
)

SECRET = b"correct horse battery staple"


def writeSecret(
    testCase: SynchronousTestCase, content: bytes = SECRET + b"\n", mode: int = 0o600
) -> str:
    """
    A secret file in a fresh directory removed after the test.
    """
    directory = tempfile.mkdtemp(prefix="tlsession-test-")
    testCase.addCleanup(shutil.rmtree, directory)
    path = os.path.join(directory, "secret")
    with open(path, "wb") as f:
        f.write(content)
    os.chmod(path, mode)
    return path


class SecretFileTests(SynchronousTestCase):
    """
    L{readSecretFile} reads the secret and refuses files that would leak it.
    """

    def test_stripsWhitespace(self) -> None:
        """
        The newline an editor adds (and any surrounding space) is not part
        of the secret.
        """
        path = writeSecret(self, b"  " + SECRET + b"\r\n\n")
        self.assertEqual(readSecretFile(path), SECRET)

    def test_missing(self) -> None:
        """
        A missing file is named, with the system's reason.
        """
        path = os.path.join(tempfile.gettempdir(), "tlsession-no-such-secret")
        error = self.assertRaises(DaemonConfigError, readSecretFile, path)
        self.assertEqual(
            str(error),
            f"{path}: cannot read the secret file: No such file or directory",
        )

    def test_empty(self) -> None:
        """
        An empty (or blank) file is refused.
        """
        for content in [b"", b" \n\t\n"]:
            path = writeSecret(self, content)
            error = self.assertRaises(DaemonConfigError, readSecretFile, path)
            self.assertEqual(str(error), f"{path}: the secret file is empty")

    def test_groupOrOthers(self) -> None:
        """
        A file its group or others may read or write is refused, saying how
        to fix it.
        """
        for mode in [0o640, 0o604, 0o620, 0o660, 0o644]:
            path = writeSecret(self, mode=mode)
            error = self.assertRaises(DaemonConfigError, readSecretFile, path)
            self.assertEqual(
                str(error),
                f"{path}: the secret file is accessible by its group or others "
                f"(mode {mode:04o}); make it private with: chmod 600 {path}",
            )
        self.assertEqual(readSecretFile(writeSecret(self, mode=0o400)), SECRET)

    def test_tooShort(self) -> None:
        """
        A secret under 16 characters is refused, with a way to make one.
        """
        path = writeSecret(self, b"hunter2\n")
        error = self.assertRaises(DaemonConfigError, readSecretFile, path)
        self.assertIn("the secret is shorter than 16 characters", str(error))
        self.assertIn("secrets.token_urlsafe(32)", str(error))

    def test_notARegularFile(self) -> None:
        """
        A directory is not a secret file.
        """
        directory = tempfile.mkdtemp(prefix="tlsession-test-")
        self.addCleanup(shutil.rmtree, directory)
        os.chmod(directory, 0o700)
        error = self.assertRaises(DaemonConfigError, readSecretFile, directory)
        self.assertEqual(
            str(error), f"{directory}: the secret file is not a regular file"
        )

    def test_tooLong(self) -> None:
        """
        A file of more than 4 KiB is not a one-line secret.
        """
        path = writeSecret(self, b"x" * 5000)
        error = self.assertRaises(DaemonConfigError, readSecretFile, path)
        self.assertIn("the secret file is over 4096 bytes", str(error))


class ListenEndpointTests(SynchronousTestCase):
    """
    L{checkListenEndpoint} keeps the login and the sessions off plain
    networks.
    """

    def test_unixGetsPrivateMode(self) -> None:
        """
        A unix socket without a mode is made 0600; an explicit mode is kept.
        """
        self.assertEqual(
            checkListenEndpoint("unix:/run/tl.sock"), "unix:/run/tl.sock:mode=600"
        )
        self.assertEqual(
            checkListenEndpoint("unix:/run/tl.sock:mode=660"),
            "unix:/run/tl.sock:mode=660",
        )

    def test_tlsAndSystemdUnix(self) -> None:
        """
        TLS listeners and systemd unix sockets are accepted as they are.
        """
        for description in [
            "ssl:7100:privateKey=key.pem",
            "systemd:domain=UNIX:index=0",
        ]:
            self.assertEqual(checkListenEndpoint(description), description)

    def test_plainRefused(self) -> None:
        """
        C{tcp:} and other plain listeners are refused, naming the flag that
        allows them.
        """
        for description in ["tcp:7100", "tcp6:7100", "systemd:domain=INET:index=0"]:
            error = self.assertRaises(
                DaemonConfigError, checkListenEndpoint, description
            )
            self.assertEqual(
                str(error),
                f"{description!r}: the session daemon would send its login (an "
                "MD5 challenge) and every session unencrypted; listen on "
                "unix:PATH or ssl:..., or pass --insecure to allow it on a "
                "private network",
            )
        error = self.assertRaises(
            DaemonConfigError,
            checkListenEndpoint,
            "tcp:7100",
            False,
            "--sessions-insecure",
        )
        self.assertIn("pass --sessions-insecure to allow", str(error))

    def test_insecure(self) -> None:
        """
        With C{insecure}, plain listeners are accepted.
        """
        self.assertEqual(checkListenEndpoint("tcp:7100", insecure=True), "tcp:7100")


class DaemonConfigTests(SynchronousTestCase):
    """
    L{DaemonConfig} refuses limits the daemon could not honour.
    """

    def test_build(self) -> None:
        """
        L{DaemonConfig.build} checks the endpoints and the secret file and
        keeps the file's absolute path.
        """
        path = writeSecret(self)
        config = DaemonConfig.build(
            ["unix:/tmp/a.sock", "unix:/tmp/b.sock:mode=640"], path, maxSessions=5
        )
        self.assertEqual(
            config.listen, ("unix:/tmp/a.sock:mode=600", "unix:/tmp/b.sock:mode=640")
        )
        self.assertEqual(config.secretFile, path)
        self.assertEqual(config.maxSessions, 5)

    def test_badLimits(self) -> None:
        """
        Limits that are not positive, a value limit over what PB can send or
        over the total, and an empty listen list are refused by name.
        """
        listen = ("unix:/tmp/a.sock:mode=600",)
        for settings, message in [
            ({"maxSessions": 0}, "--max-sessions: expected an integer > 0, got 0"),
            ({"maxBytes": -1}, "--max-bytes: expected an integer > 0, got -1"),
            (
                {"idleTimeout": float("inf")},
                "--idle-timeout: expected a number > 0, got inf",
            ),
            (
                {"absoluteTimeout": 0.0},
                "--absolute-timeout: expected a number > 0, got 0.0",
            ),
            (
                {"statsInterval": -5.0},
                "--stats-interval: expected a number > 0, got -5.0",
            ),
            (
                {"maxValueBytes": 600_000},
                "--max-value-bytes: at most 524288 (Perspective Broker refuses "
                "larger strings), got 600000",
            ),
            (
                {"maxValueBytes": 2048, "maxBytes": 1024},
                "--max-value-bytes (2048) is over --max-bytes (1024): one session "
                "could never be stored",
            ),
            (
                {"loginTimeout": 0},
                "--login-timeout: expected a number > 0, got 0",
            ),
            (
                {"maxConnections": 10, "maxUnauthenticated": 11},
                "--max-unauthenticated (11) is over --max-connections (10)",
            ),
            (
                {"maxUnauthenticated": 0},
                "--max-unauthenticated: expected an integer > 0, got 0",
            ),
            (
                {"maxUnauthenticatedPerAddress": 2.5},
                "--max-unauthenticated-per-address: expected an integer > 0, got 2.5",
            ),
        ]:
            error = self.assertRaises(
                DaemonConfigError, DaemonConfig, listen, "/secret", **settings
            )
            self.assertEqual(str(error), message)
        error = self.assertRaises(DaemonConfigError, DaemonConfig, (), "/secret")
        self.assertEqual(
            str(error),
            "no listen endpoint: give --listen ENDPOINT, e.g. "
            "unix:/run/tlsession/daemon.sock",
        )

    def test_unparseable(self) -> None:
        """
        An endpoint string Twisted cannot parse stops start-up.
        """
        error = self.assertRaises(
            DaemonConfigError,
            DaemonConfig.build,
            ["ssl:7100:bogus=1"],
            writeSecret(self),
        )
        self.assertIn("'ssl:7100:bogus=1' is not a valid server endpoint", str(error))

    def test_secretReadAtStart(self) -> None:
        """
        A secret file that became unreadable after parsing stops the build.
        """
        path = writeSecret(self)
        config = DaemonConfig.build(["unix:/tmp/a.sock"], path)
        os.chmod(path, 0o644)
        self.assertRaises(DaemonConfigError, makeDaemonService, config, Clock())
