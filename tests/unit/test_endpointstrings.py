"""
Tests for L{tlsuite._endpoints}: endpoint strings checked without listening
or connecting, and listen failures explained in one line.
"""

from __future__ import annotations

import errno
import socket

from twisted.internet.error import CannotListenError
from twisted.trial.unittest import SynchronousTestCase

from tlsuite._endpoints import (
    EndpointStringError,
    checkClientEndpoint,
    checkServerEndpoint,
    endpointKind,
    listenErrorMessage,
    portProblem,
    refusalReason,
)


class CheckServerEndpointTests(SynchronousTestCase):
    """
    L{checkServerEndpoint} refuses what Twisted could not listen on.
    """

    def test_valid(self) -> None:
        """
        Ordinary server endpoint strings pass.
        """
        for description in [
            "tcp:8080",
            "tcp:port=0:interface=127.0.0.1",
            "tcp6:8080",
            "unix:/run/x.sock:mode=600",
        ]:
            checkServerEndpoint(description)

    def test_unknownType(self) -> None:
        """
        An unknown endpoint type is refused, naming the string.
        """
        error = self.assertRaises(EndpointStringError, checkServerEndpoint, "nope:1234")
        self.assertIn("'nope:1234' is not a valid server endpoint", str(error))

    def test_portOutOfRange(self) -> None:
        """
        A port over 65535 is refused at once, not when listening.
        """
        error = self.assertRaises(EndpointStringError, checkServerEndpoint, "tcp:70000")
        self.assertIn("the port must be from 0 to 65535, got 70000", str(error))

    def test_missingCertificate(self) -> None:
        """
        An C{ssl:} endpoint whose key file is missing is refused in one
        line.
        """
        error = self.assertRaises(
            EndpointStringError,
            checkServerEndpoint,
            "ssl:7100:privateKey=/nonexistent/key.pem",
        )
        self.assertNotIn("\n", str(error))
        self.assertIn("is not a valid server endpoint", str(error))

    def test_systemdWithoutSocket(self) -> None:
        """
        A C{systemd:} socket systemd did not pass says what to check.
        """
        error = self.assertRaises(
            EndpointStringError, checkServerEndpoint, "systemd:domain=UNIX:index=7"
        )
        self.assertIn("is the .socket unit active", str(error))


class CheckClientEndpointTests(SynchronousTestCase):
    """
    L{checkClientEndpoint} refuses what Twisted could not connect with.
    """

    def test_valid(self) -> None:
        """
        Ordinary client endpoint strings pass.
        """
        checkClientEndpoint("tcp:host=127.0.0.1:port=6379")
        checkClientEndpoint("unix:path=/run/redis.sock")

    def test_invalid(self) -> None:
        """
        A missing or out-of-range port, or an unknown type, is refused.
        """
        for description, reason in [
            ("tcp:host=127.0.0.1", "no port given"),
            ("tcp:host=127.0.0.1:port=0", "the port must be from 1 to 65535"),
            ("bogus:x", "is not a valid client endpoint"),
        ]:
            error = self.assertRaises(
                EndpointStringError, checkClientEndpoint, description
            )
            self.assertIn(reason, str(error))


class CheckedEndpointTests(SynchronousTestCase):
    """
    The check functions return the endpoint they built, for callers that
    look further into it.
    """

    def test_returned(self) -> None:
        """
        The endpoints are the ones Twisted builds for the strings.
        """
        server = checkServerEndpoint("tcp:8080:interface=127.0.0.1")
        self.assertEqual(server._port, 8080)  # type: ignore[attr-defined]
        client = checkClientEndpoint("tcp:host=127.0.0.1:port=6379")
        self.assertEqual(client._port, 6379)  # type: ignore[attr-defined]


class PortProblemTests(SynchronousTestCase):
    """
    L{portProblem} says what is wrong with a port, in words callers quote.
    """

    def test_problems(self) -> None:
        """
        A missing port, or one out of range, is described; a good port, or
        a type without one, gives C{None}.
        """
        self.assertEqual(portProblem("tcp:interface=127.0.0.1"), "no port given")
        self.assertEqual(
            portProblem("tcp6:port=65536"),
            "the port must be from 0 to 65535, got 65536",
        )
        self.assertEqual(
            portProblem("tcp:host=a:port=0", client=True),
            "the port must be from 1 to 65535, got 0",
        )
        self.assertEqual(portProblem("tls:a", client=True), "no port given")
        self.assertEqual(
            portProblem("tcp:interface=127.0.0.1", example="tcp:80"),
            "no port given, as in tcp:80",
        )
        self.assertIsNone(portProblem("tcp:0"))
        self.assertIsNone(portProblem("unix:/run/a.sock"))
        self.assertIsNone(portProblem("tcp:host=a:port=1", client=True))


class RefusalReasonTests(SynchronousTestCase):
    """
    L{refusalReason} puts Twisted's refusal in one line.
    """

    def test_lookupError(self) -> None:
        """
        A lookup error is named, since its text alone is just the key.
        """
        self.assertEqual(refusalReason(KeyError("x")), "KeyError 'x'")

    def test_oneLine(self) -> None:
        """
        Line breaks in Twisted's message are folded.
        """
        self.assertEqual(refusalReason(ValueError("a\n  b")), "a b")

    def test_systemd(self) -> None:
        """
        A C{systemd:} socket not passed gets a hint.
        """
        self.assertIn(
            "is the .socket unit active", refusalReason(KeyError("web"), "systemd")
        )


class EndpointKindTests(SynchronousTestCase):
    """
    L{endpointKind} names the type.
    """

    def test_kind(self) -> None:
        """
        The type is the first part, in lower case.
        """
        self.assertEqual(endpointKind("UNIX:/x"), "unix")
        self.assertEqual(endpointKind("tcp:80"), "tcp")
        self.assertEqual(endpointKind(""), "")


class ListenErrorMessageTests(SynchronousTestCase):
    """
    L{listenErrorMessage} turns a failed listen into one line.
    """

    def test_addressInUse(self) -> None:
        """
        A port another process holds is named as such.
        """
        holder = socket.socket()
        self.addCleanup(holder.close)
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        other = socket.socket()
        self.addCleanup(other.close)
        try:
            other.bind(("127.0.0.1", port))
        except OSError as e:
            error = CannotListenError("127.0.0.1", port, e)
        else:  # pragma: no cover - the kernel always refuses
            self.fail("bound a port in use")
        message = listenErrorMessage(f"tcp:{port}", error)
        self.assertEqual(
            message,
            f"cannot listen on tcp:{port}: the address is already in use: another "
            "process holds it (stop that process, or choose another address)",
        )

    def test_permissionDenied(self) -> None:
        """
        A refused bind says what it takes.
        """
        error = CannotListenError(
            "", 80, PermissionError(errno.EACCES, "Permission denied")
        )
        self.assertIn("permission denied", listenErrorMessage("tcp:80", error))

    def test_other(self) -> None:
        """
        Any other error is given by its description.
        """
        error = CannotListenError(
            None, "/x/y.sock", OSError(errno.ENOENT, "No such file or directory")
        )
        self.assertEqual(
            listenErrorMessage("unix:/x/y.sock", error),
            "cannot listen on unix:/x/y.sock: No such file or directory",
        )
