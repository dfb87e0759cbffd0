"""
Pins every reach into Twisted's private names (all of them in
L{tlsuite._twisted}): when a Twisted upgrade renames or changes one, these
tests fail first, naming it.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel, Request
from twisted.web.http_headers import Headers
from zope.interface import implementer

from tlsuite import _twisted


class EndpointParseTests(SynchronousTestCase):
    """
    C{twisted.internet.endpoints._parse}.
    """

    def test_splitsAndUnescapes(self) -> None:
        """
        Positional and keyword parts, backslash escapes undone, as
        serverFromString sees them.
        """
        self.assertEqual(
            _twisted.parseEndpointString(r"tcp:80:interface=\:\:1:backlog=511"),
            (["tcp", "80"], {"interface": "::1", "backlog": "511"}),
        )
        self.assertEqual(
            _twisted.parseEndpointString(r"unix:path=/run/a\=b.sock"),
            (["unix"], {"path": "/run/a=b.sock"}),
        )
        self.assertEqual(_twisted.parseEndpointString("tcp"), (["tcp"], {}))


class HeadersDictTests(SynchronousTestCase):
    """
    C{twisted.web.http_headers.Headers._rawHeaders}.
    """

    def test_oneDictOfLists(self) -> None:
        """
        The dict maps one spelling of each name to its list of values, and
        what is put in it is what the public methods read.
        """
        headers = Headers()
        headers.setRawHeaders(b"X-Thing", [b"a", b"b"])
        raw = _twisted.headersDict(headers)
        assert raw is not None, "this Twisted keeps no dict in Headers"
        ((name, values),) = raw.items()
        self.assertEqual(values, [b"a", b"b"])
        raw[name] = [b"c"]
        self.assertEqual(headers.getRawHeaders(b"x-thing"), [b"c"])
        self.assertEqual(headers.getRawHeaders(b"X-Thing"), [b"c"])

    def test_notADict(self) -> None:
        """
        Anything else gives C{None}, so callers use the public methods.
        """

        class Other:
            _rawHeaders = [("x", "y")]

        self.assertIsNone(_twisted.headersDict(Other()))  # type: ignore[arg-type]


class ForcedSecureTests(SynchronousTestCase):
    """
    C{twisted.web.http.Request._forceSSL}.
    """

    def request(self) -> Request:
        channel = HTTPChannel()
        channel.makeConnection(
            StringTransport(hostAddress=IPv4Address("TCP", "127.0.0.1", 80))
        )
        return Request(channel)

    def test_setHostMarksSecure(self) -> None:
        """
        C{setHost(..., ssl=True)} sets the flag, and C{isSecure()} agrees.
        """
        request = self.request()
        self.assertFalse(_twisted.forcedSecure(request))
        self.assertFalse(request.isSecure())
        request.setHost(b"example.com", 443, ssl=True)
        self.assertTrue(_twisted.forcedSecure(request))
        self.assertTrue(request.isSecure())


@implementer(IStreamServerEndpoint)
class _RefusingEndpoint:
    """
    An endpoint whose every listen fails at once, as one on a port in use
    does.
    """

    def listen(self, factory: object) -> Deferred[IListeningPort]:
        return fail(CannotListenError("127.0.0.1", 80, OSError(98, "in use")))


class RaiseListenErrorsAtStartTests(SynchronousTestCase):
    """
    C{twisted.application.internet.StreamServerEndpointService._raiseSynchronously}.
    """

    def service(self) -> StreamServerEndpointService:
        return StreamServerEndpointService(
            _RefusingEndpoint(), Factory.forProtocol(Protocol)
        )

    def test_raises(self) -> None:
        """
        With the flag set, starting the service raises the listen error.
        """
        service = self.service()
        _twisted.raiseListenErrorsAtStart(service)
        self.assertRaises(CannotListenError, service.privilegedStartService)

    def test_logsWithout(self) -> None:
        """
        Without it, the error is only logged: what the flag is for.
        """
        service = self.service()
        service.privilegedStartService()
        self.assertEqual(len(self.flushLoggedErrors(CannotListenError)), 1)


class EncodingResourceEncoderTests(SynchronousTestCase):
    """
    C{twisted.web.resource._IEncodingResource} and
    C{twisted.web.server.Request._encoder}.
    """

    def test_gzipEncoderTakenFromTheWrapper(self) -> None:
        """
        An L{EncodingResourceWrapper} gives a gzip-accepting request its
        encoder, which C{Request.write} then uses; a request that already
        has one keeps it.
        """
        from twisted.web.resource import EncodingResourceWrapper, Resource
        from twisted.web.server import GzipEncoderFactory
        from twisted.web.test.requesthelper import DummyRequest

        wrapper = EncodingResourceWrapper(Resource(), [GzipEncoderFactory()])
        request = DummyRequest([b""])
        request.requestHeaders.setRawHeaders(b"accept-encoding", [b"gzip"])
        encoder = _twisted.encodingResourceEncoder(wrapper, request)
        self.assertIsNotNone(encoder)
        self.assertIs(request._encoder, encoder)  # type: ignore[attr-defined]
        self.assertIs(_twisted.encodingResourceEncoder(wrapper, request), encoder)

    def test_plainResourceHasNone(self) -> None:
        """
        A resource without encoders gives none.
        """
        from twisted.web.resource import Resource
        from twisted.web.test.requesthelper import DummyRequest

        self.assertIsNone(
            _twisted.encodingResourceEncoder(Resource(), DummyRequest([b""]))
        )


class ReleaseSharedPortTests(SynchronousTestCase):
    """
    C{twisted.internet.tcp.Port._shouldShutdown} and the unix port's
    C{connectionLost} (which unlinks the socket file).
    """

    def test_tcpPortFlag(self) -> None:
        """
        Twisted's TCP ports shut their socket down on close unless the flag
        says otherwise; releasing a port clears it.
        """
        from twisted.internet import tcp

        self.assertIs(tcp.Port._shouldShutdown, True)
        port = tcp.Port(0, Factory.forProtocol(Protocol), interface="127.0.0.1")
        _twisted.releaseSharedPort(port)
        self.assertIs(port._shouldShutdown, False)  # type: ignore[attr-defined]

    def test_unixPortKeepsItsFile(self) -> None:
        """
        A released unix port, once its listening socket is closed, leaves
        the socket file in place (the process it was handed to serves it).
        """
        import os
        import socket
        import tempfile

        from twisted.internet import unix
        from twisted.python.failure import Failure

        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "s.sock")
        port = unix.Port(path, Factory.forProtocol(Protocol))
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(path)
        self.addCleanup(os.unlink, path)
        port.socket = listening
        port.fileno = listening.fileno
        port.lockFile = None
        _twisted.releaseSharedPort(port)
        port.connectionLost(Failure(Exception("stopped")))
        self.assertTrue(os.path.exists(path))
