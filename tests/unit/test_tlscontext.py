"""
Tests for the server TLS settings of L{tlbalance.tls} (built in
C{tlbalance._tlscontext}): the cipher lists, the check of a user's cipher
string, session resumption and the rotation of ticket keys, and how
L{splitServerTLS} applies settings to C{ssl:} and C{tlsni:} listeners.
Every handshake runs in memory.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor, MemoryReactorClock
from twisted.python.filepath import FilePath
from twisted.trial.unittest import SynchronousTestCase

from tests.unit.test_tls import (
    ALPHA,
    BETA,
    DEFAULT,
    MOZILLA_ECDSA,
    Handshake,
    ResumingClient,
    acceptedTLS12Ciphers,
    sslServerDescription,
    temporaryPath,
    trusting,
    writeDirectory,
)
from tlbalance._endpoints import quoteEndpointArgument
from tlbalance.tls import (
    DEFAULT_CIPHERS,
    SESSION_LIFETIME,
    TLS13_CIPHERSUITES,
    SingleCertificate,
    SNICertificateDirectory,
    TLSConfigError,
    TLSSettings,
    checkCiphers,
    splitServerTLS,
    tlsFacts,
)


def single(settings: Any = None, clock: Any = None) -> SingleCertificate:
    """
    A listener's TLS showing the alpha certificate.
    """
    return SingleCertificate(
        ALPHA.key, ALPHA.certificate, (), settings, clock or Clock()
    )


def pumpPair(client: SSL.Connection, server: SSL.Connection) -> None:
    """
    Move bytes between two memory-BIO connections until neither has any.
    """
    moved = True
    while moved:
        moved = False
        for source, sink in ((client, server), (server, client)):
            try:
                data = source.bio_read(65536)
            except SSL.WantReadError:
                continue
            if data:
                sink.bio_write(data)
                moved = True


class TLSSettingsTests(SynchronousTestCase):
    """
    L{TLSSettings} builds the contexts of every TLS listener.
    """

    def test_defaultTLS12Suites(self) -> None:
        """
        By default the TLS 1.2 suites are those of Mozilla's intermediate
        profile (guidelines 6.0), in its order: ECDHE key exchange with
        AES-GCM or ChaCha20-Poly1305.
        """
        self.assertEqual(
            TLSSettings().offered(),
            (
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-AES128-GCM-SHA256",
                "ECDHE-ECDSA-AES256-GCM-SHA384",
                "ECDHE-RSA-AES256-GCM-SHA384",
                "ECDHE-ECDSA-CHACHA20-POLY1305",
                "ECDHE-RSA-CHACHA20-POLY1305",
            ),
        )
        self.assertEqual(":".join(TLSSettings().offered()), DEFAULT_CIPHERS)

    def test_tls13Suites(self) -> None:
        """
        The TLS 1.3 suites are the three AEAD ones, pinned.
        """
        names = SSL.Connection(TLSSettings().context(), None).get_cipher_list()
        # In OpenSSL's order where pyOpenSSL cannot pin them (before 25.3).
        self.assertEqual(
            sorted(n for n in names if n.startswith("TLS_")),
            sorted(TLS13_CIPHERSUITES.split(":")),
        )

    def test_tls13Negotiated(self) -> None:
        """
        A current client gets TLS 1.3.
        """
        handshake = Handshake(single(), trusting("alpha.example.com"))
        self.assertTrue(handshake.works())
        facts = tlsFacts(handshake.server.transport)
        assert facts is not None
        self.assertEqual(facts.version, "TLSv1.3")

    def test_ownCiphers(self) -> None:
        """
        Settings with their own cipher string offer exactly its suites.
        """
        settings = TLSSettings(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
        self.assertEqual(
            acceptedTLS12Ciphers(single(settings)), ["ECDHE-ECDSA-AES256-GCM-SHA384"]
        )

    def test_ownCiphersMayBeWeaker(self) -> None:
        """
        The cipher string is the user's call: a CBC suite they list is
        offered.
        """
        settings = TLSSettings(ciphers=DEFAULT_CIPHERS + ":ECDHE-ECDSA-AES128-SHA")
        self.assertEqual(
            sorted(acceptedTLS12Ciphers(single(settings))),
            sorted(MOZILLA_ECDSA + ["ECDHE-ECDSA-AES128-SHA"]),
        )

    def test_badCiphers(self) -> None:
        """
        Settings whose cipher string OpenSSL finds nothing in cannot be made.
        """
        self.assertRaises(TLSConfigError, TLSSettings, ciphers="NOSUCHCIPHER")

    def test_maxVersion(self) -> None:
        """
        C{maxVersion} caps the protocol: a TLS 1.3 client gets TLS 1.2.
        """
        handshake = Handshake(
            single(TLSSettings(maxVersion=SSL.TLS1_2_VERSION)),
            trusting("alpha.example.com"),
        )
        self.assertTrue(handshake.works())
        facts = tlsFacts(handshake.server.transport)
        assert facts is not None
        self.assertEqual(facts.version, "TLSv1.2")

    def test_maxVersionBelowFloor(self) -> None:
        """
        A newest version below TLS 1.2 is refused.
        """
        self.assertRaises(TLSConfigError, TLSSettings, maxVersion=SSL.TLS1_1_VERSION)

    def test_describe(self) -> None:
        """
        L{TLSSettings.describe} says, in one line, the versions, the TLS 1.2
        suites and how long sessions last.
        """
        self.assertEqual(
            TLSSettings(ciphers="ECDHE-RSA-AES128-GCM-SHA256").describe(),
            "TLS 1.2 to TLS 1.3; TLS 1.2 suites ECDHE-RSA-AES128-GCM-SHA256; "
            f"sessions resumable for {SESSION_LIFETIME}s",
        )

    def test_renegotiationRefused(self) -> None:
        """
        A TLS 1.2 client asking to renegotiate is refused.
        """
        clientContext = SSL.Context(SSL.TLS_METHOD)
        clientContext.set_max_proto_version(SSL.TLS1_2_VERSION)
        client = SSL.Connection(clientContext, None)
        client.set_connect_state()
        server = single().serverConnectionForTLS(None)
        server.set_accept_state()
        for _ in range(5):
            for side in (client, server):
                try:
                    side.do_handshake()
                except SSL.WantReadError:
                    pass
            pumpPair(client, server)
        client.write(b"x")
        pumpPair(client, server)
        self.assertEqual(server.recv(10), b"x")
        self.assertTrue(client.renegotiate())
        with self.assertRaises(SSL.Error) as caught:
            for _ in range(5):
                try:
                    client.do_handshake()
                except SSL.WantReadError:
                    pass
                pumpPair(client, server)
                try:
                    server.recv(10)
                except SSL.WantReadError:
                    pass
                pumpPair(client, server)
        self.assertIn("no renegotiation", str(caught.exception))


class CheckCiphersTests(SynchronousTestCase):
    """
    L{checkCiphers} checks a cipher string in one line.
    """

    def test_accepted(self) -> None:
        """
        A string OpenSSL selects something from comes back unchanged, even
        with names it does not know (one list can serve several versions).
        """
        for text in [
            DEFAULT_CIPHERS,
            "ECDHE+AESGCM:!aNULL",
            "NOSUCHCIPHER:ECDHE-RSA-AES128-GCM-SHA256",
        ]:
            self.assertEqual(checkCiphers(text), text)

    def test_refused(self) -> None:
        """
        An empty string, a string that selects no TLS 1.2 suite (TLS 1.3
        names select none) and a non-ASCII one are refused, in one line
        that quotes them.
        """
        for text, expected in [
            ("", "expected an OpenSSL cipher string"),
            ("  ", "expected an OpenSSL cipher string"),
            ("NOSUCHCIPHER", "OpenSSL finds no TLS 1.2 cipher suite in 'NOSUCHCIPHER'"),
            ("TLS_AES_128_GCM_SHA256", "no TLS 1.2 cipher suite"),
            ("ECDHE-RSA-AES128-GCM-SHA256\u00e9", "is not ASCII"),
        ]:
            error = self.assertRaises(TLSConfigError, checkCiphers, text)
            self.assertIn(expected, str(error))
            self.assertNotIn("\n", str(error))


class SessionRotationTests(SynchronousTestCase):
    """
    Each listener's session context, which holds its ticket keys, is
    replaced once it is L{SESSION_LIFETIME} seconds old.
    """

    def test_resumesWithinLifetime(self) -> None:
        """
        A client coming back just before the keys are replaced resumes.
        """
        clock = Clock()
        creator = single(clock=clock)
        client = ResumingClient()
        client.connect(creator)
        clock.advance(SESSION_LIFETIME - 1)
        client.connect(creator)
        self.assertEqual(client.certificateSent, [True, False])

    def test_fullHandshakeAfterRotation(self) -> None:
        """
        Once the keys are replaced, an old session is not resumed: the
        client makes a full handshake, and resumes the new session after it.
        """
        clock = Clock()
        creator = single(clock=clock)
        for version in [SSL.TLS1_2_VERSION, None]:
            client = ResumingClient(version)
            client.connect(creator)
            clock.advance(SESSION_LIFETIME)
            client.connect(creator)
            client.connect(creator)
            self.assertEqual(client.certificateSent, [True, True, False], version)

    def test_shorterLifetime(self) -> None:
        """
        C{sessionLifetime} sets when the keys are replaced.
        """
        clock = Clock()
        creator = single(TLSSettings(sessionLifetime=60), clock)
        client = ResumingClient()
        client.connect(creator)
        clock.advance(60)
        client.connect(creator)
        self.assertEqual(client.certificateSent, [True, True])

    def test_sniRotation(self) -> None:
        """
        A C{tlsni:} directory's keys are replaced the same way, and a reload
        of its certificates keeps them, so sessions still resume.
        """
        clock = Clock()
        path = writeDirectory(self, {"a.pem": ALPHA.combinedPEM()})
        sni = SNICertificateDirectory(path, clock=clock)
        client = ResumingClient(serverName=b"alpha.example.com")
        client.connect(sni)
        path.child("b.pem").setContent(BETA.combinedPEM())
        sni.reload()
        client.connect(sni)
        clock.advance(SESSION_LIFETIME)
        client.connect(sni)
        self.assertEqual(client.certificateSent, [True, False, True])


class SplitServerSettingsTests(SynchronousTestCase):
    """
    L{splitServerTLS} gives C{ssl:} and C{tlsni:} listeners the settings it
    is given.
    """

    def sslDescription(self, **options: str) -> str:
        """
        C{ssl:0:privateKey=alpha.pem} with extra C{options}.
        """
        return sslServerDescription(self, ALPHA, **options)

    def test_sslGetsSettings(self) -> None:
        """
        An C{ssl:} listener becomes a L{SingleCertificate} with the settings
        given, or the defaults.
        """
        settings = TLSSettings(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
        plain, creator = splitServerTLS(
            MemoryReactor(), self.sslDescription(), settings
        )
        assert isinstance(creator, SingleCertificate)
        self.assertEqual(creator.settings, settings)
        self.assertEqual(
            acceptedTLS12Ciphers(creator), ["ECDHE-ECDSA-AES256-GCM-SHA384"]
        )
        plain, creator = splitServerTLS(MemoryReactor(), self.sslDescription())
        assert isinstance(creator, SingleCertificate)
        self.assertEqual(creator.settings, TLSSettings())

    def test_sslRotatesOnTheReactorsClock(self) -> None:
        """
        The session keys of an C{ssl:} listener age on its reactor's clock.
        """
        reactor = MemoryReactorClock()
        plain, creator = splitServerTLS(reactor, self.sslDescription())
        client = ResumingClient()
        client.connect(creator)
        reactor.advance(SESSION_LIFETIME)
        client.connect(creator)
        self.assertEqual(client.certificateSent, [True, True])

    def test_sslMethodTLS12(self) -> None:
        """
        C{sslmethod=TLSv1_2_METHOD} keeps its meaning: TLS 1.2 only.
        """
        plain, creator = splitServerTLS(
            MemoryReactor(), self.sslDescription(sslmethod="TLSv1_2_METHOD")
        )
        assert isinstance(creator, SingleCertificate)
        self.assertEqual(creator.settings.maxVersion, SSL.TLS1_2_VERSION)
        handshake = Handshake(creator, trusting("alpha.example.com"))
        self.assertTrue(handshake.works())
        facts = tlsFacts(handshake.server.transport)
        assert facts is not None
        self.assertEqual(facts.version, "TLSv1.2")

    def test_sslMethodTLS(self) -> None:
        """
        C{sslmethod=TLS_METHOD} (or its old name C{SSLv23_METHOD}) leaves
        TLS 1.3 on.
        """
        for method in ["TLS_METHOD", "SSLv23_METHOD"]:
            plain, creator = splitServerTLS(
                MemoryReactor(), self.sslDescription(sslmethod=method)
            )
            assert isinstance(creator, SingleCertificate)
            self.assertIsNone(creator.settings.maxVersion)

    def test_sslRefusedOptions(self) -> None:
        """
        C{ssl:} options tlbalance's settings would silently drop are
        refused: an old or unknown C{sslmethod}, C{dhParameters}.
        """
        for method in ["TLSv1_METHOD", "TLSv1_1_METHOD", "NO_SUCH_METHOD", "Context"]:
            error = self.assertRaises(
                TLSConfigError,
                splitServerTLS,
                MemoryReactor(),
                self.sslDescription(sslmethod=method),
            )
            self.assertIn("sslmethod must be TLS_METHOD or TLSv1_2_METHOD", str(error))

        dhFile = FilePath(temporaryPath(self))
        dhFile.setContent(b"")
        error = self.assertRaises(
            TLSConfigError,
            splitServerTLS,
            MemoryReactor(),
            self.sslDescription(dhParameters=quoteEndpointArgument(dhFile.path)),
        )
        self.assertIn("dhParameters is not supported", str(error))

    def test_sniGetsSettings(self) -> None:
        """
        A C{tlsni:} directory is read with the settings given, or the
        defaults.
        """
        directory = writeDirectory(self, {"a.pem": DEFAULT.combinedPEM()})
        description = f"tlsni:certdir={quoteEndpointArgument(directory.path)}:tcp:0"
        plain, creator = splitServerTLS(MemoryReactor(), description)
        assert isinstance(creator, SNICertificateDirectory)
        self.assertEqual(creator.settings, TLSSettings())
        settings = TLSSettings(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384")
        plain, creator = splitServerTLS(MemoryReactor(), description, settings)
        assert isinstance(creator, SNICertificateDirectory)
        self.assertEqual(creator.settings, settings)
        self.assertEqual(
            acceptedTLS12Ciphers(creator), ["ECDHE-ECDSA-AES256-GCM-SHA384"]
        )
