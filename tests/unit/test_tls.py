"""
Tests for L{tlbalance.tls}: SNI certificate directories, taking TLS off
endpoint strings, writing a preamble before TLS, and TLS facts. Every
handshake runs in memory.
"""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
)
from cryptography.x509.oid import NameOID
from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP4ServerEndpoint,
    UNIXServerEndpoint,
    clientFromString,
    serverFromString,
)
from twisted.internet.error import ConnectingCancelledError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    PrivateCertificate,
    optionsForClientTLS,
)
from twisted.internet.task import Clock
from twisted.internet.testing import (
    EventLoggingObserver,
    MemoryReactor,
    MemoryReactorClock,
    StringTransport,
)
from twisted.logger import globalLogPublisher
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath
from twisted.test import iosim
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tests.certs import CertificateAuthority, IssuedCertificate, makeAuthority, namesOf
from tlbalance._endpoints import quoteEndpointArgument
from tlbalance.tls import (
    SNICertificateDirectory,
    TLSConfigError,
    TLSFacts,
    TLSServerEndpoint,
    TLSSettings,
    connectWithPreamble,
    parseSNIEndpoint,
    splitClientTLS,
    splitServerTLS,
    tlsFacts,
)
from tlbalance.upstream import ProxyReceiverEndpoint

# One authority and a few certificates for the whole module: EC keys are
# quick, but there is no need to make them per test.
CA = makeAuthority()
ALPHA = CA.issue("alpha.example.com")
BETA = CA.issue("beta.example.com", "www.beta.example.com")
WILDCARD = CA.issue("*.example.com")
WWW = CA.issue("www.example.com")
DEFAULT = CA.issue("default.example.org")


class Recorder(Protocol):
    """
    An application protocol that records what happens to it.
    """

    def __init__(self) -> None:
        self.received: List[bytes] = []
        self.lostReason: Optional[Failure] = None

    def dataReceived(self, data: bytes) -> None:
        self.received.append(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.lostReason = reason


@implementer(IOpenSSLClientConnectionCreator)
class RawClient:
    """
    A TLS client built on L{SSL.Context} directly: no verification, an
    optional server name, optionally limited to old protocol versions.
    """

    def __init__(
        self,
        serverName: Optional[bytes] = None,
        maxVersion: Optional[int] = None,
        ciphers: Optional[bytes] = None,
        alpn: Sequence[bytes] = (),
    ) -> None:
        self.serverName = serverName
        self.maxVersion = maxVersion
        self.ciphers = ciphers
        self.alpn = list(alpn)

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        context = SSL.Context(SSL.TLS_METHOD)
        if self.maxVersion is not None:
            # OpenSSL only offers TLS 1.1 with the floor removed and the
            # security level at 0.
            context.set_min_proto_version(0)
            context.set_max_proto_version(self.maxVersion)
            context.set_cipher_list(b"ALL:@SECLEVEL=0")
        if self.ciphers is not None:
            # TLS 1.3 suites are not configurable per list: stay on 1.2.
            context.set_max_proto_version(SSL.TLS1_2_VERSION)
            context.set_cipher_list(self.ciphers)
        if self.alpn:
            context.set_alpn_protos(self.alpn)
        connection = SSL.Connection(context, None)
        if self.serverName is not None:
            connection.set_tlsext_host_name(self.serverName)
        return connection


@implementer(IOpenSSLServerConnectionCreator)
class ContextServer:
    """
    A server connection creator around one ready-made context.
    """

    def __init__(self, context: SSL.Context) -> None:
        self.context = context

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        return SSL.Connection(self.context, None)


class Handshake:
    """
    A client and a server TLS connection, connected in memory and pumped
    until nothing moves.
    """

    def __init__(self, serverCreator: Any, clientCreator: Any) -> None:
        self.clock = Clock()
        self.client = Recorder()
        self.server = Recorder()
        serverFactory = TLSMemoryBIOFactory(
            serverCreator,
            False,
            Factory.forProtocol(lambda: self.server),
            clock=self.clock,
        )
        clientFactory = TLSMemoryBIOFactory(
            clientCreator,
            True,
            Factory.forProtocol(lambda: self.client),
            clock=self.clock,
        )
        self.clientTLS, self.serverTLS, self.pump = iosim.connectedServerAndClient(
            lambda: serverFactory.buildProtocol(None),
            lambda: clientFactory.buildProtocol(None),
            clock=self.clock,
        )
        self.pump.flush()
        connection = self.clientTLS.getHandle()
        self.peerCertificate = (
            connection.get_peer_certificate(as_cryptography=True)
            if connection is not None
            else None
        )

    def peerNames(self) -> List[str]:
        """
        The names in the certificate the client was shown.
        """
        assert self.peerCertificate is not None, "no certificate was presented"
        return list(namesOf(self.peerCertificate))

    def works(self) -> bool:
        """
        Application data sent by the client reaches the server.
        """
        if self.client.lostReason is not None or self.server.lostReason is not None:
            return False
        self.client.transport.write(b"ping")
        self.pump.flush()
        return b"".join(self.server.received) == b"ping"

    def refused(self) -> bool:
        """
        Both sides lost the connection during the handshake and no
        application data flowed.
        """
        return (
            self.client.lostReason is not None
            and self.server.lostReason is not None
            and self.server.received == []
            and self.client.received == []
        )


@implementer(IOpenSSLClientConnectionCreator)
class ResumingClient:
    """
    A TLS client like a browser's: one context for all its connections,
    offering the session of its previous connection when it connects again.
    It notes, for each handshake, whether the server sent its certificate,
    which a resumed (abbreviated) handshake does not.

    @ivar certificateSent: one entry per connection, in order.
    """

    def __init__(
        self,
        maxVersion: Optional[int] = None,
        serverName: Optional[bytes] = None,
        tickets: bool = True,
    ) -> None:
        self.context = SSL.Context(SSL.TLS_METHOD)
        if maxVersion is not None:
            self.context.set_max_proto_version(maxVersion)
        if not tickets:
            self.context.set_options(SSL.OP_NO_TICKET)
        self.context.set_info_callback(self._stateChanged)
        self.serverName = serverName
        self.session: Optional[SSL.Session] = None
        self.certificateSent: List[bool] = []

    def _stateChanged(self, connection: SSL.Connection, where: int, ret: int) -> None:
        if connection.get_state_string() == b"SSLv3/TLS read server certificate":
            self.certificateSent[-1] = True

    def clientConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        if self.serverName is not None:
            connection.set_tlsext_host_name(self.serverName)
        if self.session is not None:
            connection.set_session(self.session)
        self.certificateSent.append(False)
        return connection

    def connect(self, serverCreator: Any) -> Handshake:
        """
        Make a connection to C{serverCreator}, exchange data both ways (a
        TLS 1.3 server sends its tickets after the handshake) and keep the
        session for the next one.
        """
        handshake = Handshake(serverCreator, self)
        assert handshake.works(), "the handshake failed"
        handshake.server.transport.write(b"pong")
        handshake.pump.flush()
        self.session = handshake.clientTLS.getHandle().get_session()
        # Close with close_notify, as browsers do: OpenSSL marks the session
        # of a connection freed without one as not resumable, whenever the
        # garbage collector gets to it.
        handshake.client.transport.loseConnection()
        handshake.pump.flush()
        return handshake

    def resumes(self, serverCreator: Any) -> bool:
        """
        Connect twice; say whether the second connection resumed the first
        one's session.
        """
        self.connect(serverCreator)
        self.connect(serverCreator)
        return self.certificateSent[-2:] == [True, False]


def trusting(hostname: str, authority: CertificateAuthority = CA) -> Any:
    """
    A verifying client for C{hostname} that trusts C{authority}.
    """
    return optionsForClientTLS(
        hostname, trustRoot=Certificate.loadPEM(authority.certPEM)
    )


def temporaryPath(testCase: SynchronousTestCase) -> str:
    """
    A path that does not exist yet, in a fresh directory removed after the
    test. (Trial's C{mktemp} writes below the working directory, which under
    pytest is the checkout.)
    """
    parent = tempfile.mkdtemp(prefix="tlsuite-test-")
    testCase.addCleanup(shutil.rmtree, parent, True)
    return os.path.join(parent, "entry")


def writeDirectory(
    testCase: SynchronousTestCase, files: Dict[str, bytes]
) -> FilePath[str]:
    """
    Make a fresh directory holding C{files} (base name to content).
    """
    directory = FilePath(temporaryPath(testCase))
    directory.makedirs()
    for name, content in files.items():
        directory.child(name).setContent(content)
    return directory


def sslServerDescription(
    testCase: SynchronousTestCase, issued: IssuedCertificate, **options: str
) -> str:
    """
    C{ssl:0:privateKey=FILE:interface=127.0.0.1}, with the key and
    certificate of C{issued} in one file, and C{options} added.
    """
    pem = FilePath(temporaryPath(testCase))
    pem.setContent(issued.combinedPEM())
    extra = "".join(f":{k}={v}" for k, v in options.items())
    return (
        f"ssl:0:privateKey={quoteEndpointArgument(pem.path)}:interface=127.0.0.1{extra}"
    )


def caDirectory(testCase: SynchronousTestCase) -> str:
    """
    A directory holding the test authority's certificate, for C{caCertsDir=}
    and C{trustRoots=}.
    """
    return writeDirectory(testCase, {"ca.pem": CA.certPEM}).path


def certificateWithoutSAN(commonName: str) -> IssuedCertificate:
    """
    A certificate naming its host only in the subject's common name.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)]))
        .issuer_name(CA.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(CA.key, hashes.SHA256())
    )
    return IssuedCertificate(key, certificate)


class SNICertificateDirectoryTests(SynchronousTestCase):
    """
    L{SNICertificateDirectory} serves the certificate matching the client's
    server name.
    """

    def directory(
        self, strict: bool = False, **files: bytes
    ) -> SNICertificateDirectory:
        """
        An SNI directory over C{files}, given as keyword arguments whose names
        are the file names without C{.pem}.
        """
        path = writeDirectory(self, {f"{k}.pem": v for k, v in files.items()})
        return SNICertificateDirectory(path.path, strict=strict)

    def test_interface(self) -> None:
        """
        The directory is a server connection creator, usable wherever Twisted
        takes one.
        """
        sni = self.directory(a=ALPHA.combinedPEM())
        self.assertTrue(verifyObject(IOpenSSLServerConnectionCreator, sni))

    def test_serverNamePicksCertificate(self) -> None:
        """
        A client asking for a name gets the certificate carrying that name,
        whichever file it is in, and its verifying handshake succeeds.
        """
        sni = self.directory(a=ALPHA.combinedPEM(), b=BETA.combinedPEM())
        for hostname, expected in [
            ("alpha.example.com", ["alpha.example.com"]),
            ("beta.example.com", ["beta.example.com", "www.beta.example.com"]),
            ("www.beta.example.com", ["beta.example.com", "www.beta.example.com"]),
        ]:
            handshake = Handshake(sni, trusting(hostname))
            self.assertTrue(handshake.works(), hostname)
            self.assertEqual(handshake.peerNames(), expected)

    def test_clientOfferingALPN(self) -> None:
        """
        A client that offers ALPN protocols the server does not speak (curl
        and browsers offer h2 and http/1.1) completes the handshake with no
        protocol chosen, instead of being refused with an internal_error
        alert as Twisted's own callback gets it refused with current
        pyOpenSSL.
        """
        sni = self.directory(a=ALPHA.combinedPEM())
        handshake = Handshake(
            sni, RawClient(b"alpha.example.com", alpn=[b"h2", b"http/1.1"])
        )
        self.assertTrue(handshake.works())
        self.assertEqual(
            handshake.clientTLS.getHandle().get_alpn_proto_negotiated(), b""
        )

    def test_nameIsCaseInsensitive(self) -> None:
        """
        Server names match regardless of case and of a trailing dot.
        """
        sni = self.directory(a=DEFAULT.combinedPEM(), b=BETA.combinedPEM())
        for name in [b"BETA.Example.COM", b"beta.example.com."]:
            handshake = Handshake(sni, RawClient(name))
            self.assertEqual(handshake.peerNames()[0], "beta.example.com", name)

    def test_wildcardMatchesOneLabel(self) -> None:
        """
        C{*.example.com} serves C{a.example.com} but neither
        C{a.b.example.com} nor C{example.com}: those get the default.
        """
        sni = self.directory(a=DEFAULT.combinedPEM(), b=WILDCARD.combinedPEM())
        handshake = Handshake(sni, trusting("a.example.com"))
        self.assertTrue(handshake.works())
        self.assertEqual(handshake.peerNames(), ["*.example.com"])
        for name in [b"a.b.example.com", b"example.com"]:
            handshake = Handshake(sni, RawClient(name))
            self.assertEqual(handshake.peerNames(), ["default.example.org"], name)

    def test_exactNameBeatsWildcard(self) -> None:
        """
        An exact name wins over a wildcard, even one loaded first.
        """
        sni = self.directory(a=WILDCARD.combinedPEM(), b=WWW.combinedPEM())
        handshake = Handshake(sni, trusting("www.example.com"))
        self.assertTrue(handshake.works())
        self.assertEqual(handshake.peerNames(), ["www.example.com"])
        handshake = Handshake(sni, trusting("other.example.com"))
        self.assertEqual(handshake.peerNames(), ["*.example.com"])

    def test_firstFileIsTheDefault(self) -> None:
        """
        Clients sending no server name or an unknown one get the certificate
        of the first file in alphabetical order, and their handshake works.
        """
        sni = self.directory(
            b_beta=BETA.combinedPEM(),
            a_default=DEFAULT.combinedPEM(),
            c_alpha=ALPHA.combinedPEM(),
        )
        for client in [
            RawClient(),
            RawClient(b"unknown.example.net"),
            RawClient(b"intranet"),
        ]:
            handshake = Handshake(sni, client)
            self.assertTrue(handshake.works())
            self.assertEqual(handshake.peerNames(), ["default.example.org"])

    def test_commonNameWithoutSAN(self) -> None:
        """
        A certificate without a SAN serves the name in its common name.
        """
        legacy = certificateWithoutSAN("legacy.example.com")
        sni = self.directory(a=DEFAULT.combinedPEM(), b=legacy.combinedPEM())
        handshake = Handshake(sni, RawClient(b"legacy.example.com"))
        self.assertEqual(handshake.peerNames(), ["legacy.example.com"])
        self.assertEqual(
            sni.names,
            {"default.example.org": "a.pem", "legacy.example.com": "b.pem"},
        )

    def test_commonNameIgnoredWithSAN(self) -> None:
        """
        When a certificate has a SAN, its common name is not served on its
        own: only SAN names count.
        """
        issued = CA.issue("san.example.com")
        sni = self.directory(a=DEFAULT.combinedPEM(), b=issued.combinedPEM())
        self.assertEqual(sorted(sni.names), ["default.example.org", "san.example.com"])

    def test_chainIsSent(self) -> None:
        """
        Certificates after the first in a file are sent as the chain, so a
        client trusting only the root verifies a certificate issued by an
        intermediate.
        """
        intermediate = CA.intermediate("tlsuite intermediate")
        leaf = intermediate.issue("chained.example.com")
        sni = self.directory(a=leaf.combinedPEM() + leaf.chainPEM)
        self.assertTrue(Handshake(sni, trusting("chained.example.com")).works())
        unchained = self.directory(a=leaf.combinedPEM())
        self.assertFalse(Handshake(unchained, trusting("chained.example.com")).works())

    def test_certificateBeforeKey(self) -> None:
        """
        The key may also come after the certificate in the file.
        """
        sni = self.directory(a=ALPHA.certPEM + ALPHA.keyPEM)
        self.assertTrue(Handshake(sni, trusting("alpha.example.com")).works())

    def test_strictRefusesUnknownName(self) -> None:
        """
        With C{strict}, a client asking for an unknown name sees its handshake
        fail before any certificate is shown, and the name is logged.
        """
        events = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        sni = self.directory(strict=True, a=ALPHA.combinedPEM())
        handshake = Handshake(sni, RawClient(b"unknown.example.net"))
        self.assertTrue(handshake.refused())
        self.assertIsNone(handshake.peerCertificate)
        refusals = [e for e in events if e.get("serverName") == "unknown.example.net"]
        self.assertEqual(len(refusals), 1)

    def test_strictRefusesNoName(self) -> None:
        """
        With C{strict}, a client sending no server name is refused too.
        """
        sni = self.directory(strict=True, a=ALPHA.combinedPEM())
        self.assertTrue(Handshake(sni, RawClient()).refused())

    def test_strictServesKnownNames(self) -> None:
        """
        With C{strict}, matching names, wildcards included, are served.
        """
        sni = self.directory(
            strict=True, a=ALPHA.combinedPEM(), b=WILDCARD.combinedPEM()
        )
        self.assertTrue(Handshake(sni, trusting("alpha.example.com")).works())
        self.assertTrue(Handshake(sni, trusting("x.example.com")).works())

    def test_tls11Refused(self) -> None:
        """
        A client that speaks at most TLS 1.1 is refused.
        """
        sni = self.directory(a=ALPHA.combinedPEM())
        handshake = Handshake(sni, RawClient(b"alpha.example.com", SSL.TLS1_1_VERSION))
        self.assertTrue(handshake.refused())

    def test_tls11ClientWorksAgainstPermissiveServer(self) -> None:
        """
        The TLS 1.1 client used by the refusal tests does complete a handshake
        with a server that allows TLS 1.1, so those refusals come from the
        server's floor and not from the client.
        """
        context = SSL.Context(SSL.TLS_METHOD)
        context.use_certificate(ALPHA.certificate)
        context.use_privatekey(ALPHA.key)
        context.set_min_proto_version(0)
        context.set_cipher_list(b"ALL:@SECLEVEL=0")
        handshake = Handshake(
            ContextServer(context), RawClient(None, SSL.TLS1_1_VERSION)
        )
        self.assertTrue(handshake.works())
        facts = tlsFacts(handshake.server.transport)
        assert facts is not None
        self.assertEqual(facts.version, "TLSv1.1")

    def test_clientChoosesAmongCiphers(self) -> None:
        """
        The client's cipher order wins, as Mozilla's intermediate profile
        has it (every suite offered is strong, and the client knows whether
        it has AES hardware): a client listing AES-128 first gets AES-128,
        one listing AES-256 first gets AES-256.
        """
        sni = self.directory(a=ALPHA.combinedPEM())
        chosen = []
        for ciphers in [
            b"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384",
            b"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256",
        ]:
            handshake = Handshake(sni, RawClient(ciphers=ciphers))
            self.assertTrue(handshake.works())
            facts = tlsFacts(handshake.server.transport)
            assert facts is not None
            chosen.append(facts.cipher)
        self.assertEqual(
            chosen, ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"]
        )

    def test_reload(self) -> None:
        """
        L{SNICertificateDirectory.reload} picks up added files for new
        handshakes.
        """
        path = writeDirectory(self, {"a.pem": ALPHA.combinedPEM()})
        sni = SNICertificateDirectory(path)
        self.assertEqual(
            Handshake(sni, RawClient(b"beta.example.com")).peerNames(),
            ["alpha.example.com"],
        )
        path.child("b.pem").setContent(BETA.combinedPEM())
        sni.reload()
        self.assertEqual(
            Handshake(sni, RawClient(b"beta.example.com")).peerNames()[0],
            "beta.example.com",
        )

    def test_failedReloadKeepsCertificates(self) -> None:
        """
        A reload that meets a broken file raises and leaves the certificates
        loaded before in service.
        """
        path = writeDirectory(self, {"a.pem": ALPHA.combinedPEM()})
        sni = SNICertificateDirectory(path)
        path.child("b.pem").setContent(BETA.certPEM)
        error = self.assertRaises(TLSConfigError, sni.reload)
        self.assertIn("b.pem", str(error))
        handshake = Handshake(sni, trusting("alpha.example.com"))
        self.assertTrue(handshake.works())


class BrokenDirectoryTests(SynchronousTestCase):
    """
    A directory that cannot work fails at start-up with a message naming the
    culprit.
    """

    def assertBroken(self, files: Dict[str, bytes], culprit: str, problem: str) -> None:
        """
        Loading a directory of C{files} raises L{TLSConfigError} naming the
        C{culprit} file and saying C{problem}.
        """
        path = writeDirectory(self, files)
        error = self.assertRaises(TLSConfigError, SNICertificateDirectory, path.path)
        self.assertIn(path.child(culprit).path, str(error))
        self.assertIn(problem, str(error))

    def test_noDirectory(self) -> None:
        """
        A missing directory is reported by its path.
        """
        missing = temporaryPath(self)
        error = self.assertRaises(TLSConfigError, SNICertificateDirectory, missing)
        self.assertIn(missing, str(error))
        self.assertIn("not a directory", str(error))

    def test_noPEMFiles(self) -> None:
        """
        A directory with no C{*.pem} file (other files are ignored) is
        refused.
        """
        path = writeDirectory(self, {"a.key": ALPHA.keyPEM, "README": b"hi"})
        error = self.assertRaises(TLSConfigError, SNICertificateDirectory, path)
        self.assertIn(path.path, str(error))
        self.assertIn("no *.pem", str(error))

    def test_noKey(self) -> None:
        """
        A file with a certificate but no private key is refused.
        """
        self.assertBroken(
            {"a.pem": ALPHA.combinedPEM(), "b.pem": BETA.certPEM},
            "b.pem",
            "no private key",
        )

    def test_noCertificate(self) -> None:
        """
        A file with a key but no certificate is refused.
        """
        self.assertBroken({"a.pem": ALPHA.keyPEM}, "a.pem", "no certificate")

    def test_keyDoesNotMatch(self) -> None:
        """
        A key that belongs to another certificate is refused.
        """
        self.assertBroken(
            {"a.pem": ALPHA.keyPEM + BETA.certPEM}, "a.pem", "does not match"
        )

    def test_chainBeforeCertificate(self) -> None:
        """
        A chain certificate placed before the server's own is reported as a
        mismatch, since the first certificate must be the server's.
        """
        intermediate = CA.intermediate("tlsuite intermediate")
        leaf = intermediate.issue("chained.example.com")
        self.assertBroken(
            {"a.pem": leaf.keyPEM + leaf.chainPEM + leaf.certPEM},
            "a.pem",
            "does not match",
        )

    def test_encryptedKey(self) -> None:
        """
        An encrypted private key is refused (there is no one to type the
        password).
        """
        encrypted = ALPHA.key.private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(b"secret")
        )
        self.assertBroken({"a.pem": encrypted + ALPHA.certPEM}, "a.pem", "encrypted")

    def test_garbledKey(self) -> None:
        """
        A PEM block that claims to be a key but is not is refused.
        """
        garbled = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        self.assertBroken(
            {"a.pem": garbled + ALPHA.certPEM}, "a.pem", "unreadable private key"
        )

    def test_twoKeys(self) -> None:
        """
        A file with two private keys is ambiguous and refused.
        """
        self.assertBroken(
            {"a.pem": ALPHA.combinedPEM() + BETA.keyPEM}, "a.pem", "more than one"
        )

    def test_garbledCertificate(self) -> None:
        """
        A PEM block that claims to be a certificate but is not is refused.
        """
        garbled = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        self.assertBroken(
            {"a.pem": ALPHA.keyPEM + garbled}, "a.pem", "unreadable certificate"
        )

    def test_unreadable(self) -> None:
        """
        A C{*.pem} entry that cannot be read (here, a directory) is refused.
        """
        path = writeDirectory(self, {"a.pem": ALPHA.combinedPEM()})
        path.child("b.pem").makedirs()
        error = self.assertRaises(TLSConfigError, SNICertificateDirectory, path)
        self.assertIn(path.child("b.pem").path, str(error))
        self.assertIn("cannot read", str(error))

    def test_keyTooWeak(self) -> None:
        """
        A certificate OpenSSL will not serve at its security level (a
        1024-bit RSA key) is refused at start-up rather than at the first
        handshake.
        """
        key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "weak.example.com")])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        weak = IssuedCertificate(key, certificate)  # type: ignore[arg-type]
        self.assertBroken({"a.pem": weak.combinedPEM()}, "a.pem", "OpenSSL refused")


class SNIEndpointTests(SynchronousTestCase):
    """
    The C{tlsni:} endpoint string.
    """

    def setUp(self) -> None:
        self.certdir = writeDirectory(
            self, {"a.pem": ALPHA.combinedPEM(), "b.pem": BETA.combinedPEM()}
        )
        self.quoted = quoteEndpointArgument(self.certdir.path)

    def test_throughPlugin(self) -> None:
        """
        C{serverFromString} builds a TLS endpoint over the inner TCP endpoint
        through the installed plugin, and connections accepted on it get the
        certificate matching their server name.
        """
        reactor = MemoryReactor()
        endpoint = serverFromString(
            reactor, f"tlsni:certdir={self.quoted}:tcp:0:interface=127.0.0.1"
        )
        self.assertIsInstance(endpoint, TLSServerEndpoint)
        self.assertTrue(verifyObject(IStreamServerEndpoint, endpoint))
        self.assertIsInstance(endpoint.wrapped, TCP4ServerEndpoint)
        self.assertFalse(endpoint.contextFactory.strict)

        app = Recorder()
        endpoint.listen(Factory.forProtocol(lambda: app))
        port, factory, backlog, interface = reactor.tcpServers[0]
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        clock = Clock()
        clientApp = Recorder()
        clientFactory = TLSMemoryBIOFactory(
            trusting("beta.example.com"),
            True,
            Factory.forProtocol(lambda: clientApp),
            clock=clock,
        )
        clientTLS, serverTLS, pump = iosim.connectedServerAndClient(
            lambda: factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1)),
            lambda: clientFactory.buildProtocol(None),
            clock=clock,
        )
        clientApp.transport.write(b"hello")
        pump.flush()
        self.assertEqual(b"".join(app.received), b"hello")
        peer = clientTLS.getHandle().get_peer_certificate(as_cryptography=True)
        self.assertEqual(namesOf(peer)[0], "beta.example.com")

    def test_strictAndUnix(self) -> None:
        """
        C{strict=yes} makes a strict directory; a unix inner endpoint works.
        """
        socketPath = quoteEndpointArgument(temporaryPath(self))
        endpoint = parseSNIEndpoint(
            MemoryReactor(), "unix", socketPath, certdir=self.certdir.path, strict="yes"
        )
        self.assertTrue(endpoint.contextFactory.strict)
        self.assertIsInstance(endpoint.wrapped, UNIXServerEndpoint)

    def test_clockIsTheReactor(self) -> None:
        """
        TLS write batching is scheduled on the reactor the endpoint was
        parsed with, when it has a clock.
        """
        reactor = MemoryReactorClock()
        endpoint = serverFromString(reactor, f"tlsni:certdir={self.quoted}:tcp:0")
        self.assertIs(endpoint.clock, reactor)

    def test_missingCertdir(self) -> None:
        """
        Without C{certdir}, parsing fails saying so.
        """
        error = self.assertRaises(
            TLSConfigError, serverFromString, MemoryReactor(), "tlsni:tcp:0"
        )
        self.assertIn("certdir", str(error))

    def test_badStrict(self) -> None:
        """
        C{strict} takes yes or no.
        """
        error = self.assertRaises(
            TLSConfigError,
            serverFromString,
            MemoryReactor(),
            f"tlsni:certdir={self.quoted}:strict=maybe:tcp:0",
        )
        self.assertIn("maybe", str(error))

    def test_missingInner(self) -> None:
        """
        Without an inner endpoint, parsing fails with an example.
        """
        error = self.assertRaises(
            TLSConfigError,
            serverFromString,
            MemoryReactor(),
            f"tlsni:certdir={self.quoted}",
        )
        self.assertIn("tcp:8443", str(error))

    def test_brokenDirectory(self) -> None:
        """
        A broken directory fails at parse time, which is start-up.
        """
        empty = writeDirectory(self, {})
        self.assertRaises(
            TLSConfigError,
            serverFromString,
            MemoryReactor(),
            f"tlsni:certdir={quoteEndpointArgument(empty.path)}:tcp:0",
        )


class SplitServerTLSTests(SynchronousTestCase):
    """
    L{splitServerTLS} builds a server endpoint string as its plain listener
    and its TLS.
    """

    def test_sslEndpoint(self) -> None:
        """
        An C{ssl:} string becomes a TCP listener on the same port, interface
        and backlog, and TLS that serves its certificate.
        """
        reactor = MemoryReactor()
        plain, creator = splitServerTLS(
            reactor, sslServerDescription(self, ALPHA, backlog="7")
        )
        self.assertIsInstance(plain, TCP4ServerEndpoint)
        assert creator is not None
        self.assertTrue(IOpenSSLServerConnectionCreator.providedBy(creator))

        plain.listen(Factory.forProtocol(Protocol))
        self.assertEqual(reactor.sslServers, [])
        port, factory, backlog, interface = reactor.tcpServers[0]
        self.assertEqual((port, backlog, interface), (0, 7, "127.0.0.1"))

        handshake = Handshake(creator, trusting("alpha.example.com"))
        self.assertTrue(handshake.works())
        self.assertEqual(handshake.peerNames(), ["alpha.example.com"])

    def test_sslListensWhereTwistedWould(self) -> None:
        """
        Whatever the form of the C{ssl:} string (positional or named
        arguments, defaults), the TCP listener gets the port, backlog and
        interface Twisted's own C{ssl:} endpoint would listen with.
        """
        pem = FilePath(temporaryPath(self))
        pem.setContent(ALPHA.combinedPEM())
        key = quoteEndpointArgument(pem.path)
        for description in [
            f"ssl:8443:privateKey={key}",
            f"ssl:8443:{key}",
            f"ssl:port=8443:privateKey={key}:certKey={key}",
            f"ssl:8443:{key}:{key}:interface=127.0.0.1:backlog=511",
            rf"ssl:8443:privateKey={key}:interface=\:\:1",
        ]:
            ours, theirs = MemoryReactor(), MemoryReactor()
            plain, creator = splitServerTLS(ours, description)
            plain.listen(Factory.forProtocol(Protocol))
            with warnings.catch_warnings():
                # Some pyOpenSSL versions warn inside Twisted's ssl: parser.
                warnings.simplefilter("ignore", DeprecationWarning)
                serverFromString(theirs, description).listen(
                    Factory.forProtocol(Protocol)
                )
            port, _, backlog, interface = ours.tcpServers[0]
            sslPort, _, _, sslBacklog, sslInterface = theirs.sslServers[0]
            self.assertEqual(
                (port, backlog, interface),
                (sslPort, sslBacklog, sslInterface),
                description,
            )

    def test_sslSeparateFilesAndChain(self) -> None:
        """
        C{certKey=} names the certificate file, C{privateKey=} the key file
        and C{extraCertChain=} the intermediate certificates, which are
        sent: a client that trusts only the root verifies the server.
        """
        intermediate = CA.intermediate("tlsuite test intermediate")
        issued = intermediate.issue("chained.example.com")
        files = writeDirectory(
            self,
            {
                "key.pem": issued.keyPEM,
                "cert.pem": issued.certPEM,
                "chain.pem": issued.chainPEM,
            },
        )
        quoted = {
            name: quoteEndpointArgument(files.child(name).path)
            for name in ["key.pem", "cert.pem", "chain.pem"]
        }
        plain, creator = splitServerTLS(
            MemoryReactor(),
            f"ssl:0:privateKey={quoted['key.pem']}:certKey={quoted['cert.pem']}:"
            f"extraCertChain={quoted['chain.pem']}",
        )
        handshake = Handshake(creator, trusting("chained.example.com"))
        self.assertTrue(handshake.works())
        self.assertEqual(handshake.peerNames(), ["chained.example.com"])

    def test_sslEmptyChain(self) -> None:
        """
        An C{extraCertChain=} file without a certificate is refused, naming
        the file.
        """
        chain = FilePath(temporaryPath(self))
        chain.setContent(b"nothing here\n")
        error = self.assertRaises(
            TLSConfigError,
            splitServerTLS,
            MemoryReactor(),
            sslServerDescription(
                self, ALPHA, extraCertChain=quoteEndpointArgument(chain.path)
            ),
        )
        self.assertIn(chain.path, str(error))

    def test_sslMissingKeyFile(self) -> None:
        """
        A missing key file is reported as Twisted's parser reports it: with
        the file's name.
        """
        missing = temporaryPath(self)
        error = self.assertRaises(
            OSError,
            splitServerTLS,
            MemoryReactor(),
            f"ssl:0:privateKey={quoteEndpointArgument(missing)}",
        )
        self.assertIn(missing, str(error))

    def test_sslUnknownOption(self) -> None:
        """
        An option C{ssl:} does not take is refused, naming it and the ones
        it takes.
        """
        error = self.assertRaises(
            TLSConfigError,
            splitServerTLS,
            MemoryReactor(),
            sslServerDescription(self, ALPHA, privatekey="x.pem"),
        )
        self.assertIn("unknown option privatekey=", str(error))
        self.assertIn("privateKey, certKey", str(error))

    def test_sslNoPort(self) -> None:
        """
        An C{ssl:} string without a port says so.
        """
        error = self.assertRaises(
            TLSConfigError, splitServerTLS, MemoryReactor(), "ssl:privateKey=a.pem"
        )
        self.assertIn("port is missing", str(error))

    def test_sslEndpointWithALPNClient(self) -> None:
        """
        The TLS of an C{ssl:} string serves clients that offer ALPN
        protocols (Twisted's own ALPN callback would refuse them).
        """
        plain, creator = splitServerTLS(
            MemoryReactor(), sslServerDescription(self, ALPHA)
        )
        handshake = Handshake(creator, RawClient(alpn=[b"h2", b"http/1.1"]))
        self.assertTrue(handshake.works())

    def test_sslEndpointRefusesTLS11(self) -> None:
        """
        The TLS of an C{ssl:} string refuses a TLS 1.1 client: TLS 1.2 is
        the floor.
        """
        plain, creator = splitServerTLS(
            MemoryReactor(), sslServerDescription(self, ALPHA)
        )
        handshake = Handshake(creator, RawClient(None, SSL.TLS1_1_VERSION))
        self.assertTrue(handshake.refused())

    def test_sniEndpoint(self) -> None:
        """
        A C{tlsni:} string becomes the listener it wraps and its certificate
        directory, read once.
        """
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        directory = writeDirectory(self, {"a.pem": ALPHA.combinedPEM()})
        reactor = MemoryReactor()
        plain, creator = splitServerTLS(
            reactor,
            f"tlsni:certdir={quoteEndpointArgument(directory.path)}:strict=yes:"
            "tcp:0:interface=127.0.0.1",
            TLSSettings(ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"),
        )
        self.assertIsInstance(plain, TCP4ServerEndpoint)
        assert isinstance(creator, SNICertificateDirectory)
        self.assertEqual(creator.directory, directory)
        self.assertTrue(creator.strict)
        self.assertEqual(creator.settings.ciphers, "ECDHE-ECDSA-AES256-GCM-SHA384")
        loads = [e for e in observer if "certificate file(s) loaded" in e["log_format"]]
        self.assertEqual(len(loads), 1)
        plain.listen(Factory.forProtocol(Protocol))
        self.assertEqual(reactor.tcpServers[0][3], "127.0.0.1")
        self.assertTrue(Handshake(creator, trusting("alpha.example.com")).works())

    def test_sniOptionsChecked(self) -> None:
        """
        A C{tlsni:} string is checked as the C{tlsni:} endpoint parser
        checks it.
        """
        error = self.assertRaises(
            TLSConfigError, splitServerTLS, MemoryReactor(), "tlsni:tcp:0"
        )
        self.assertIn("certdir", str(error))

    def test_twistedTLSEndpointRefused(self) -> None:
        """
        Twisted's own C{tls:} server endpoint builds its contexts with
        Twisted's defaults, which cannot be changed from outside: it is
        refused with a message pointing to C{tlsni:}.
        """
        directory = writeDirectory(self, {"alpha.example.com.pem": ALPHA.combinedPEM()})
        error = self.assertRaises(
            TLSConfigError,
            splitServerTLS,
            MemoryReactor(),
            f"tls:{quoteEndpointArgument(directory.path)}:port=0",
        )
        self.assertIn("use tlsni:certdir=DIRECTORY", str(error))

    def test_plainEndpoint(self) -> None:
        """
        A string without TLS is built as Twisted builds it, with no TLS;
        that includes C{tlproxy:}, whose TLS (if any) stays below it.
        """
        plain, creator = splitServerTLS(MemoryReactor(), "tcp:0")
        self.assertIsInstance(plain, TCP4ServerEndpoint)
        self.assertIsNone(creator)
        plain, creator = splitServerTLS(
            MemoryReactor(), f"unix:{quoteEndpointArgument(temporaryPath(self))}"
        )
        self.assertIsInstance(plain, UNIXServerEndpoint)
        self.assertIsNone(creator)
        plain, creator = splitServerTLS(
            MemoryReactor(),
            "tlproxy:" + sslServerDescription(self, ALPHA),
        )
        self.assertIsInstance(plain, ProxyReceiverEndpoint)
        self.assertIsNone(creator)

    def test_badPlainEndpoint(self) -> None:
        """
        A string Twisted cannot build fails as it does.
        """
        self.assertRaises(ValueError, splitServerTLS, MemoryReactor(), "tcp:https")

    def test_builtEndpointRefused(self) -> None:
        """
        An endpoint already built cannot be taken apart: the string is
        asked for.
        """
        reactor = MemoryReactor()
        error = self.assertRaises(
            TypeError, splitServerTLS, reactor, TCP4ServerEndpoint(reactor, 0)
        )
        self.assertIn("the endpoint string", str(error))
        error = self.assertRaises(
            TypeError,
            splitClientTLS,
            reactor,
            TCP4ClientEndpoint(reactor, "192.0.2.7", 80),
        )
        self.assertIn("the endpoint string", str(error))


def tls12CipherNames() -> List[str]:
    """
    Every TLS 1.2 cipher suite this OpenSSL knows, weak and anonymous ones
    included.
    """
    context = SSL.Context(SSL.TLS_METHOD)
    context.set_cipher_list(b"ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    names = SSL.Connection(context, None).get_cipher_list()
    return [name for name in names if not name.startswith("TLS_")]


def acceptedTLS12Ciphers(serverCreator: Any) -> List[str]:
    """
    The TLS 1.2 cipher suites a server accepts, found as testssl does: by
    offering each suite alone.
    """
    accepted = []
    for name in tls12CipherNames():
        client = RawClient(ciphers=name.encode("ascii") + b":@SECLEVEL=0")
        if Handshake(serverCreator, client).works():
            accepted.append(name)
    return accepted


# The suites of Mozilla's intermediate profile an ECDSA certificate can use.
MOZILLA_ECDSA = [
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
]


class ListenerDefaultsTests(SynchronousTestCase):
    """
    The TLS of C{ssl:} and C{tlsni:} listeners, as L{splitServerTLS} gives
    it to the balancer: TLS 1.2 suites limited to ECDHE with AES-GCM or
    ChaCha20-Poly1305, and sessions that returning clients resume.
    """

    def sslListener(self) -> Any:
        """
        The TLS of C{ssl:0:privateKey=alpha.pem}, split off.
        """
        plain, creator = splitServerTLS(
            MemoryReactor(), sslServerDescription(self, ALPHA)
        )
        return creator

    def sniListener(self) -> Any:
        """
        The TLS of a C{tlsni:} listener over a default and a named
        certificate, split off.
        """
        directory = writeDirectory(
            self, {"a.pem": DEFAULT.combinedPEM(), "b.pem": BETA.combinedPEM()}
        )
        plain, creator = splitServerTLS(
            MemoryReactor(),
            f"tlsni:certdir={quoteEndpointArgument(directory.path)}:tcp:0",
        )
        return creator

    def test_sslOffersOnlyAEADWithForwardSecrecy(self) -> None:
        """
        Of every TLS 1.2 suite OpenSSL knows, offered one at a time, an
        C{ssl:} listener with an ECDSA certificate accepts exactly the three
        ECDHE-ECDSA AEAD suites of Mozilla's intermediate profile: no CBC,
        no RSA key exchange, no anonymous suite.
        """
        self.assertEqual(
            sorted(acceptedTLS12Ciphers(self.sslListener())), MOZILLA_ECDSA
        )

    def test_sniOffersOnlyAEADWithForwardSecrecy(self) -> None:
        """
        The same for a C{tlsni:} listener, for a client asking for a named
        certificate.
        """
        creator = self.sniListener()
        accepted = []
        for name in tls12CipherNames():
            client = RawClient(b"beta.example.com", ciphers=name.encode("ascii"))
            if Handshake(creator, client).works():
                accepted.append(name)
        self.assertEqual(sorted(accepted), MOZILLA_ECDSA)

    def test_cbcRefused(self) -> None:
        """
        A client offering only a CBC suite with forward secrecy (which
        Twisted's defaults accept) is refused by both kinds of listener.
        """
        for creator in [self.sslListener(), self.sniListener()]:
            handshake = Handshake(creator, RawClient(ciphers=b"ECDHE-ECDSA-AES128-SHA"))
            self.assertTrue(handshake.refused())

    def test_sslResumesTLS12(self) -> None:
        """
        A TLS 1.2 client connecting again to an C{ssl:} listener resumes its
        session: the server does not send its certificate again.
        """
        self.assertTrue(ResumingClient(SSL.TLS1_2_VERSION).resumes(self.sslListener()))

    def test_sslResumesTLS13(self) -> None:
        """
        So does a TLS 1.3 client.
        """
        self.assertTrue(ResumingClient().resumes(self.sslListener()))

    def test_resumesWithoutTickets(self) -> None:
        """
        A TLS 1.2 client that does not take session tickets resumes from the
        server's session cache.
        """
        client = ResumingClient(SSL.TLS1_2_VERSION, tickets=False)
        self.assertTrue(client.resumes(self.sslListener()))

    def test_sniResumesEachName(self) -> None:
        """
        On a C{tlsni:} listener, a client asking for a named certificate and
        one sending no name both resume, TLS 1.2 and TLS 1.3, and the
        resumed session still shows the certificate it asked for.
        """
        creator = self.sniListener()
        for serverName, expected in [
            (b"beta.example.com", "beta.example.com"),
            (None, "default.example.org"),
        ]:
            for version in [SSL.TLS1_2_VERSION, None]:
                client = ResumingClient(version, serverName)
                self.assertTrue(client.resumes(creator), (serverName, version))
                last = client.connect(creator)
                self.assertEqual(last.peerNames()[0], expected)

    def test_otherListenerDoesNotResume(self) -> None:
        """
        A session from one listener is not resumed by another one (each has
        its own ticket keys and cache): the client gets a full handshake.
        """
        client = ResumingClient()
        client.connect(self.sslListener())
        client.connect(self.sslListener())
        self.assertEqual(client.certificateSent, [True, True])


@implementer(IOpenSSLServerConnectionCreator)
class CertificateRequestingServer:
    """
    A server that shows the alpha certificate and asks the client for one,
    accepting any, and keeps its connections to see what the client sent.
    """

    def __init__(self) -> None:
        self.context = SSL.Context(SSL.TLS_METHOD)
        self.context.use_certificate(ALPHA.certificate)
        self.context.use_privatekey(ALPHA.key)
        self.context.set_verify(SSL.VERIFY_PEER, lambda *args: True)
        self.connections: List[SSL.Connection] = []

    def serverConnectionForTLS(self, tlsProtocol: Any) -> SSL.Connection:
        connection = SSL.Connection(self.context, None)
        self.connections.append(connection)
        return connection

    def clientNames(self) -> Sequence[str]:
        """
        The names in the certificate the last client sent.
        """
        peer = self.connections[-1].get_peer_certificate(as_cryptography=True)
        assert peer is not None, "the client sent no certificate"
        return namesOf(peer)


class SplitClientTLSTests(SynchronousTestCase):
    """
    L{splitClientTLS} builds a client endpoint string as its plain transport
    and its TLS.
    """

    def setUp(self) -> None:
        self.server = SNICertificateDirectory(
            writeDirectory(self, {"a.pem": ALPHA.combinedPEM()})
        )
        self.cas = quoteEndpointArgument(caDirectory(self))

    def test_sslEndpoint(self) -> None:
        """
        C{ssl:host=...:port=...:caCertsDir=...:hostname=...} becomes a TCP
        endpoint to the same host and port and TLS that verifies the server
        against the given authority.
        """
        reactor = MemoryReactor()
        plain, creator = splitClientTLS(
            reactor,
            "ssl:host=192.0.2.7:port=8443:timeout=7:bindAddress=192.0.2.1:"
            f"caCertsDir={self.cas}:hostname=alpha.example.com",
        )
        self.assertIsInstance(plain, TCP4ClientEndpoint)
        assert creator is not None
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(creator))

        plain.connect(Factory.forProtocol(Protocol))
        self.assertEqual(reactor.sslClients, [])
        host, port, factory, timeout, bindAddress = reactor.tcpClients[0]
        self.assertEqual(
            (host, port, timeout, bindAddress), ("192.0.2.7", 8443, 7, ("192.0.2.1", 0))
        )
        self.assertTrue(Handshake(self.server, creator).works())

    def test_sslConnectsWhereTwistedWould(self) -> None:
        """
        Whatever the form of the C{ssl:} string, the TCP endpoint connects
        to the host and port, with the timeout and bind address, that
        Twisted's own C{ssl:} endpoint would use.
        """
        for description in [
            "ssl:host=192.0.2.7:port=8443",
            "ssl:192.0.2.7:8443",
            "ssl:192.0.2.7:port=8443:timeout=3",
            "ssl:host=192.0.2.7:8443:bindAddress=192.0.2.1",
            f"ssl:192.0.2.7:8443:caCertsDir={self.cas}:hostname=alpha.example.com",
        ]:
            ours, theirs = MemoryReactor(), MemoryReactor()
            plain, creator = splitClientTLS(ours, description)
            plain.connect(Factory.forProtocol(Protocol))
            clientFromString(theirs, description).connect(Factory.forProtocol(Protocol))
            host, port, _, timeout, bindAddress = ours.tcpClients[0]
            sslHost, sslPort, _, _, sslTimeout, sslBind = theirs.sslClients[0]
            self.assertEqual(
                (host, port, timeout, bindAddress),
                (sslHost, sslPort, sslTimeout, sslBind),
                description,
            )

    def test_sslEndpointVerifies(self) -> None:
        """
        The TLS of C{ssl:} checks the server's name.
        """
        plain, creator = splitClientTLS(
            MemoryReactor(),
            f"ssl:host=192.0.2.7:port=8443:caCertsDir={self.cas}:"
            "hostname=beta.example.com",
        )
        self.assertFalse(Handshake(self.server, creator).works())

    def test_sslWithoutHostname(self) -> None:
        """
        Without C{hostname=}, C{ssl:} does what Twisted's does: TLS with no
        verification of the server at all.
        """
        plain, creator = splitClientTLS(MemoryReactor(), "ssl:host=192.0.2.7:port=8443")
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(creator))
        handshake = Handshake(self.server, creator)
        self.assertTrue(handshake.works())
        self.assertEqual(handshake.peerNames(), ["alpha.example.com"])

    def test_clientCertificates(self) -> None:
        """
        C{ssl:}'s C{certKey=}/C{privateKey=} and C{tls:}'s
        C{certificate=}/C{privateKey=} present a client certificate, from
        one file or from two.
        """
        client = CA.issue("client.example.com")
        files = writeDirectory(
            self,
            {
                "both.pem": client.combinedPEM(),
                "cert.pem": client.certPEM,
                "key.pem": client.keyPEM,
            },
        )
        both, cert, key = (
            quoteEndpointArgument(files.child(name).path)
            for name in ["both.pem", "cert.pem", "key.pem"]
        )
        for description in [
            f"ssl:host=192.0.2.7:port=8443:certKey={both}",
            f"ssl:host=192.0.2.7:port=8443:certKey={cert}:privateKey={key}:"
            f"caCertsDir={self.cas}:hostname=alpha.example.com",
            f"tls:alpha.example.com:8443:trustRoots={self.cas}:certificate={both}",
            f"tls:alpha.example.com:8443:trustRoots={self.cas}:"
            f"certificate={cert}:privateKey={key}",
        ]:
            server = CertificateRequestingServer()
            plain, creator = splitClientTLS(MemoryReactor(), description)
            self.assertTrue(Handshake(server, creator).works(), description)
            self.assertEqual(server.clientNames(), ["client.example.com"])

    def test_tlsEndpoint(self) -> None:
        """
        C{tls:host:port:trustRoots=...} becomes a L{HostnameEndpoint} to the
        host and port, and TLS that verifies the server by that host name.
        """
        plain, creator = splitClientTLS(
            MemoryReactor(), f"tls:alpha.example.com:8443:trustRoots={self.cas}"
        )
        self.assertIsInstance(plain, HostnameEndpoint)
        self.assertEqual(repr(plain), "<HostnameEndpoint alpha.example.com:8443>")
        assert creator is not None
        self.assertTrue(IOpenSSLClientConnectionCreator.providedBy(creator))
        self.assertTrue(Handshake(self.server, creator).works())
        plain, creator = splitClientTLS(
            MemoryReactor(), f"tls:beta.example.com:8443:trustRoots={self.cas}"
        )
        self.assertFalse(Handshake(self.server, creator).works())

    def test_tlsEndpointInnerString(self) -> None:
        """
        C{tls:...:endpoint=...} connects through the endpoint named inside
        it, and still verifies the host name given first.
        """
        reactor = MemoryReactor()
        plain, creator = splitClientTLS(
            reactor,
            f"tls:alpha.example.com:443:trustRoots={self.cas}:"
            r"endpoint=tcp\:192.0.2.9\:9443",
        )
        self.assertIsInstance(plain, TCP4ClientEndpoint)
        plain.connect(Factory.forProtocol(Protocol))
        self.assertEqual(reactor.tcpClients[0][:2], ("192.0.2.9", 9443))
        self.assertTrue(Handshake(self.server, creator).works())

    def test_tlsUnknownOption(self) -> None:
        """
        An option C{tls:} does not take is refused, naming it.
        """
        error = self.assertRaises(
            TLSConfigError,
            splitClientTLS,
            MemoryReactor(),
            "tls:alpha.example.com:443:trustroots=/etc/ssl",
        )
        self.assertIn("unknown option trustroots=", str(error))

    def test_missingAuthorityDirectory(self) -> None:
        """
        A C{caCertsDir=} or C{trustRoots=} directory that is not there is
        reported, naming it.
        """
        missing = temporaryPath(self)
        for description in [
            f"ssl:host=192.0.2.7:port=443:caCertsDir={missing}",
            f"tls:alpha.example.com:443:trustRoots={missing}",
        ]:
            error = self.assertRaises(
                OSError, splitClientTLS, MemoryReactor(), description
            )
            self.assertIn(missing, str(error))

    def test_plainEndpoint(self) -> None:
        """
        A string without TLS is built as Twisted builds it, with no TLS.
        """
        reactor = MemoryReactor()
        plain, creator = splitClientTLS(reactor, "tcp:host=192.0.2.7:port=80")
        self.assertIsInstance(plain, TCP4ClientEndpoint)
        self.assertIsNone(creator)
        plain.connect(Factory.forProtocol(Protocol))
        self.assertEqual(reactor.tcpClients[0][:2], ("192.0.2.7", 80))


def shuttle(
    left: Any,
    leftTransport: StringTransport,
    right: Any,
    rightTransport: StringTransport,
) -> None:
    """
    Move bytes between two protocols on L{StringTransport}s until neither
    has anything more to say.
    """
    while True:
        leftOut, rightOut = leftTransport.value(), rightTransport.value()
        if not leftOut and not rightOut:
            return
        leftTransport.clear()
        rightTransport.clear()
        if leftOut:
            right.dataReceived(leftOut)
        if rightOut:
            left.dataReceived(rightOut)


class ConnectWithPreambleTests(SynchronousTestCase):
    """
    L{connectWithPreamble} writes the preamble on the raw connection, before
    TLS.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactor()
        self.clock = Clock()
        self.seen: List[Any] = []

    def preamble(self, transport: Any) -> bytes:
        """
        A preamble built from the raw transport's addresses, as a PROXY v1
        health-check header is.
        """
        self.seen.append(transport)
        host, peer = transport.getHost(), transport.getPeer()
        return (
            f"PROXY TCP4 {host.host} {peer.host} {host.port} {peer.port}\r\n".encode()
        )

    def connect(
        self,
        endpoint: Any,
        app: Protocol,
        preamble: Any = None,
        tlsCreator: Any = None,
    ) -> Tuple[Any, Any, StringTransport]:
        """
        Connect C{endpoint} (with TLS from C{tlsCreator}, if given) through
        L{connectWithPreamble}, complete the connection in the memory
        reactor, and return the result, the protocol the reactor saw and its
        transport.
        """
        d = connectWithPreamble(
            endpoint,
            Factory.forProtocol(lambda: app),
            self.preamble if preamble is None else preamble,
            tlsCreator,
            self.clock,
        )
        host, port, factory, timeout, bindAddress = self.reactor.tcpClients[-1]
        wire = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 40000),
            peerAddress=IPv4Address("TCP", host, port),
        )
        wire.makeConnection(transport)
        return d, wire, transport

    def test_plainPreamble(self) -> None:
        """
        Without TLS, the preamble built from the raw transport is written
        first, then the application talks on the same connection, and the
        result is the application's protocol.
        """
        app = Recorder()
        endpoint = TCP4ClientEndpoint(self.reactor, "192.0.2.7", 8080)
        d, wire, transport = self.connect(endpoint, app)
        self.assertIs(self.successResultOf(d), app)
        self.assertIs(self.seen[0], transport)
        self.assertEqual(
            transport.value(), b"PROXY TCP4 10.0.0.1 192.0.2.7 40000 8080\r\n"
        )
        app.transport.write(b"GET / HTTP/1.0\r\n\r\n")
        wire.dataReceived(b"HTTP/1.0 200 OK\r\n")
        self.assertTrue(transport.value().endswith(b"GET / HTTP/1.0\r\n\r\n"))
        self.assertEqual(app.received, [b"HTTP/1.0 200 OK\r\n"])
        wire.connectionLost(Failure(ConnectionError("bye")))
        assert app.lostReason is not None
        self.assertIsInstance(app.lostReason.value, ConnectionError)

    def test_noPreamble(self) -> None:
        """
        With no preamble (L{None}), or one that builds no bytes, nothing
        precedes the application's bytes.
        """
        for preamble in [None, lambda transport: b""]:
            app = Recorder()
            d = connectWithPreamble(
                TCP4ClientEndpoint(self.reactor, "192.0.2.7", 8080),
                Factory.forProtocol(lambda app=app: app),
                preamble,
            )
            factory = self.reactor.tcpClients[-1][2]
            wire = factory.buildProtocol(IPv4Address("TCP", "192.0.2.7", 8080))
            transport = StringTransport()
            wire.makeConnection(transport)
            self.assertIs(self.successResultOf(d), app)
            app.transport.write(b"hello")
            self.assertEqual(transport.value(), b"hello")

    def test_preambleBeforeClientHello(self) -> None:
        """
        With an C{ssl:} backend, the preamble goes out first on the raw
        connection, then the TLS ClientHello; the server reading the preamble
        off the raw bytes then completes the handshake and application data
        flows both ways.
        """
        endpoint, creator = splitClientTLS(
            self.reactor,
            "ssl:host=192.0.2.7:port=8443:"
            f"caCertsDir={quoteEndpointArgument(caDirectory(self))}:"
            "hostname=alpha.example.com",
        )
        app = Recorder()
        d, wire, transport = self.connect(endpoint, app, tlsCreator=creator)
        header = b"PROXY TCP4 10.0.0.1 192.0.2.7 40000 8443\r\n"
        sent = transport.value()
        self.assertTrue(sent.startswith(header))
        # A TLS handshake record (0x16) carrying a ClientHello (0x01).
        self.assertEqual(sent[len(header)], 0x16)
        self.assertEqual(sent[len(header) + 5], 0x01)
        self.assertIs(self.successResultOf(d), app)

        serverApp = Recorder()
        sni = SNICertificateDirectory(
            writeDirectory(self, {"a.pem": ALPHA.combinedPEM()})
        )
        server = TLSMemoryBIOFactory(
            sni, False, Factory.forProtocol(lambda: serverApp), clock=self.clock
        ).buildProtocol(None)
        serverTransport = StringTransport()
        server.makeConnection(serverTransport)
        transport.clear()
        server.dataReceived(sent[len(header) :])
        shuttle(wire, transport, server, serverTransport)

        app.transport.write(b"ping")
        serverApp.transport.write(b"pong")
        self.clock.advance(0)
        shuttle(wire, transport, server, serverTransport)
        self.assertEqual(b"".join(serverApp.received), b"ping")
        self.assertEqual(b"".join(app.received), b"pong")
        facts = tlsFacts(app.transport)
        assert facts is not None
        self.assertEqual(facts.serverName, "alpha.example.com")

    def test_cancel(self) -> None:
        """
        Cancelling the result before the connection is made stops the
        connection attempt.
        """
        d = connectWithPreamble(
            TCP4ClientEndpoint(self.reactor, "192.0.2.7", 8080),
            Factory.forProtocol(Recorder),
            self.preamble,
        )
        d.cancel()
        self.failureResultOf(d, ConnectingCancelledError)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)

    def test_factoryStartsAndStops(self) -> None:
        """
        The application's factory is started and stopped with the
        connection attempt, as with a plain C{endpoint.connect}.
        """
        events: List[str] = []

        class Tracked(Factory):
            protocol = Recorder

            def startFactory(self) -> None:
                events.append("start")

            def stopFactory(self) -> None:
                events.append("stop")

        connectWithPreamble(
            TCP4ClientEndpoint(self.reactor, "192.0.2.7", 8080), Tracked(), None
        )
        wrapper = self.reactor.tcpClients[0][2]
        wrapper.doStart()
        wrapper.doStop()
        self.assertEqual(events, ["start", "stop"])

    def test_noProtocol(self) -> None:
        """
        A factory that declines to build a protocol fails the connection
        attempt and writes nothing.
        """
        factory = Factory()
        factory.buildProtocol = lambda addr: None  # type: ignore[method-assign]
        d = connectWithPreamble(
            TCP4ClientEndpoint(self.reactor, "192.0.2.7", 8080), factory, self.preamble
        )
        wrapper = self.reactor.tcpClients[0][2]
        self.assertIsNone(wrapper.buildProtocol(IPv4Address("TCP", "192.0.2.7", 8080)))
        self.failureResultOf(d)
        self.assertEqual(self.seen, [])

    def test_halfClose(self) -> None:
        """
        An application protocol that handles half-close still hears about the
        peer closing its side.
        """

        @implementer(IHalfCloseableProtocol)
        class HalfCloser(Recorder):
            readClosed = False

            def readConnectionLost(self) -> None:
                self.readClosed = True

            writeClosed = False

            def writeConnectionLost(self) -> None:
                self.writeClosed = True

        app = HalfCloser()
        d, wire, transport = self.connect(
            TCP4ClientEndpoint(self.reactor, "192.0.2.7", 8080), app
        )
        self.assertTrue(IHalfCloseableProtocol.providedBy(wire))
        wire.readConnectionLost()
        wire.writeConnectionLost()
        self.assertTrue(app.readClosed)
        self.assertTrue(app.writeClosed)
        plain = Recorder()
        d, wire, transport = self.connect(
            TCP4ClientEndpoint(self.reactor, "192.0.2.7", 8080), plain
        )
        self.assertFalse(IHalfCloseableProtocol.providedBy(wire))


class TLSFactsTests(SynchronousTestCase):
    """
    L{tlsFacts} reports what a TLS connection negotiated.
    """

    def setUp(self) -> None:
        self.sni = SNICertificateDirectory(
            writeDirectory(
                self, {"a.pem": ALPHA.combinedPEM(), "b.pem": BETA.combinedPEM()}
            )
        )

    def test_afterHandshake(self) -> None:
        """
        On the accepting side, the facts give the name the client asked for,
        the TLS version and the cipher; no client certificate was sent.
        """
        handshake = Handshake(self.sni, trusting("beta.example.com"))
        self.assertTrue(handshake.works())
        facts = tlsFacts(handshake.server.transport)
        assert facts is not None
        self.assertEqual(facts.serverName, "beta.example.com")
        self.assertEqual(facts.version, "TLSv1.3")
        self.assertEqual(
            facts.cipher, handshake.clientTLS.getHandle().get_cipher_name()
        )
        self.assertTrue(facts.cipher.startswith("TLS_"))
        self.assertFalse(facts.clientCertificate)

    def test_tls12(self) -> None:
        """
        A TLS 1.2 connection reports C{TLSv1.2} and its TLS 1.2 cipher.
        """
        handshake = Handshake(
            self.sni, RawClient(b"alpha.example.com", SSL.TLS1_2_VERSION)
        )
        self.assertTrue(handshake.works())
        facts = tlsFacts(handshake.server.transport)
        assert facts is not None
        self.assertEqual(facts.version, "TLSv1.2")
        self.assertIn("ECDHE", facts.cipher)

    def test_noServerName(self) -> None:
        """
        A client sending no server name gives a L{None} server name.
        """
        handshake = Handshake(self.sni, RawClient())
        self.assertTrue(handshake.works())
        facts = tlsFacts(handshake.server.transport)
        assert facts is not None
        self.assertIsNone(facts.serverName)

    def test_clientCertificate(self) -> None:
        """
        A client that presented a certificate is reported as such.
        """
        server = CertificateOptions(
            privateKey=ALPHA.key,
            certificate=ALPHA.certificate,
            trustRoot=Certificate.loadPEM(CA.certPEM),
        )
        clientCert = CA.issue("client.example.com")
        client = optionsForClientTLS(
            "alpha.example.com",
            trustRoot=Certificate.loadPEM(CA.certPEM),
            clientCertificate=PrivateCertificate.loadPEM(clientCert.combinedPEM()),
        )
        handshake = Handshake(server, client)
        self.assertTrue(handshake.works())
        facts = tlsFacts(handshake.server.transport)
        assert facts is not None
        self.assertTrue(facts.clientCertificate)

    def test_nativeTransport(self) -> None:
        """
        A native Twisted TLS transport (marked C{TLS = True}, its handle the
        OpenSSL connection) is described too.
        """
        handshake = Handshake(self.sni, trusting("alpha.example.com"))
        self.assertTrue(handshake.works())

        class NativeTLS:
            TLS = True

            def getHandle(self) -> SSL.Connection:
                return handshake.serverTLS.getHandle()

        facts = tlsFacts(NativeTLS())
        self.assertEqual(facts, tlsFacts(handshake.server.transport))
        assert facts is not None
        self.assertEqual(facts.serverName, "alpha.example.com")

    def test_plain(self) -> None:
        """
        A plain connection has no TLS facts.
        """
        self.assertIsNone(tlsFacts(StringTransport()))

    def test_beforeHandshake(self) -> None:
        """
        Asking before the handshake completed is a mistake, reported as such.
        """
        protocol = TLSMemoryBIOFactory(
            self.sni, False, Factory.forProtocol(Protocol), clock=Clock()
        ).buildProtocol(None)
        protocol.makeConnection(StringTransport())
        self.assertRaises(ValueError, tlsFacts, protocol)

    def test_value(self) -> None:
        """
        L{TLSFacts} compares by value, so the relay can cache and compare it.
        """
        self.assertEqual(
            TLSFacts("a", "TLSv1.3", "TLS_AES_128_GCM_SHA256", False),
            TLSFacts("a", "TLSv1.3", "TLS_AES_128_GCM_SHA256", False),
        )
