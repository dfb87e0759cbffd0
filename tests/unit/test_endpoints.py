"""
Tests for L{tlbalance._endpoints}.
"""

from twisted.trial.unittest import SynchronousTestCase

from tlbalance._endpoints import unparseEndpoint
from tlsuite._twisted import parseEndpointString


class UnparseEndpointTests(SynchronousTestCase):
    """
    L{unparseEndpoint} is the inverse of Twisted's endpoint-string splitting.
    """

    def assertRoundTrip(self, description: str) -> None:
        """
        Splitting C{description} as Twisted does and joining it again gives a
        string that splits into the same arguments.
        """
        args, kwargs = parseEndpointString(description)
        again = unparseEndpoint(args, kwargs)
        self.assertEqual(parseEndpointString(again), (args, kwargs))

    def test_plain(self) -> None:
        """
        A TCP description with keyword arguments survives the round trip.
        """
        self.assertRoundTrip("tcp:8080:interface=127.0.0.1:backlog=10")

    def test_escapedColons(self) -> None:
        """
        An IPv6 interface, whose colons are escaped, survives the round trip.
        """
        self.assertRoundTrip(r"tcp6:8080:interface=\:\:1")
        args, kwargs = parseEndpointString(r"tcp6:8080:interface=\:\:1")
        self.assertEqual(kwargs["interface"], "::1")

    def test_backslashesAndEquals(self) -> None:
        """
        Backslashes and equals signs in values are escaped again.
        """
        self.assertRoundTrip(r"unix:/tmp/a\=b\\c.sock:mode=600")
