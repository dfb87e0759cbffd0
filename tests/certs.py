"""
Certificates made at test time, so that no key is ever committed.

A test makes an authority with L{makeAuthority}, issues server certificates
from it with L{CertificateAuthority.issue} and gives clients the authority's
C{certPEM} as their trust root. Keys are EC P-256: quick to make and to use.
"""

from __future__ import annotations

import datetime
import ipaddress
from typing import Iterable, Optional, Sequence, Union

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


def _newKey() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _keyPEM(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    # A day of slack on either side keeps clock skew out of the tests.
    now = datetime.datetime.now(datetime.timezone.utc)
    return now - datetime.timedelta(days=1), now + datetime.timedelta(days=7)


def _name(commonName: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])


@frozen
class IssuedCertificate:
    """
    A server (or client) certificate and its private key.

    @ivar key: the private key.
    @ivar certificate: the certificate, signed by the issuing authority.
    @ivar chain: the certificates between this one and the root, nearest
        first (empty when a root issued it directly).
    """

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def keyPEM(self) -> bytes:
        """
        The private key, PEM (PKCS#8, unencrypted).
        """
        return _keyPEM(self.key)

    @property
    def certPEM(self) -> bytes:
        """
        The certificate alone, PEM.
        """
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def chainPEM(self) -> bytes:
        """
        The intermediate certificates, PEM, nearest first (may be empty).
        """
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.chain)

    def combinedPEM(self) -> bytes:
        """
        Key then certificate in one PEM blob: the format of C{ssl:}
        endpoints' C{privateKey=} file and of a C{tlsni:} directory entry.
        """
        return self.keyPEM + self.certPEM


@frozen
class CertificateAuthority:
    """
    A certificate authority for tests.

    @ivar key: the authority's private key.
    @ivar certificate: its certificate (self-signed for a root).
    @ivar chain: for an intermediate, the certificates above it, nearest
        first, excluding the root.
    """

    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...] = ()

    @property
    def certPEM(self) -> bytes:
        """
        The authority's certificate, PEM: what a client trusts.
        """
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def _builder(
        self, subject: x509.Name, publicKey: ec.EllipticCurvePublicKey
    ) -> x509.CertificateBuilder:
        notBefore, notAfter = _validity()
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(publicKey)
            .serial_number(x509.random_serial_number())
            .not_valid_before(notBefore)
            .not_valid_after(notAfter)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(publicKey), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    self.key.public_key()
                ),
                critical=False,
            )
        )

    def issue(
        self, *dnsNames: str, ipAddresses: Iterable[str] = ()
    ) -> IssuedCertificate:
        """
        Issue a certificate for the given names.

        @param dnsNames: DNS names; the first one is also the subject's
            common name. Wildcards such as C{"*.example.com"} are allowed.
        @param ipAddresses: IP literals put in the SAN as IP addresses.
        @return: the new certificate and its key.
        """
        ips: list[_IPAddress] = [ipaddress.ip_address(a) for a in ipAddresses]
        if not dnsNames and not ips:
            raise ValueError("a certificate needs at least one name")
        key = _newKey()
        commonName = dnsNames[0] if dnsNames else str(ips[0])
        altNames: list[x509.GeneralName] = [x509.DNSName(n) for n in dnsNames]
        altNames += [x509.IPAddress(ip) for ip in ips]
        certificate = (
            self._builder(_name(commonName), key.public_key())
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(x509.SubjectAlternativeName(altNames), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        chain = () if self._isRoot() else (self.certificate, *self.chain)
        return IssuedCertificate(key, certificate, chain)

    def intermediate(self, commonName: str) -> CertificateAuthority:
        """
        Make an intermediate authority signed by this one, for tests of
        certificate chains.

        @param commonName: the intermediate's subject common name.
        @return: the intermediate; certificates it issues carry it as chain.
        """
        key = _newKey()
        certificate = (
            self._builder(_name(commonName), key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(_caKeyUsage(), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        chain = () if self._isRoot() else (self.certificate, *self.chain)
        return CertificateAuthority(key, certificate, chain)

    def _isRoot(self) -> bool:
        return self.certificate.issuer == self.certificate.subject


def _caKeyUsage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def makeAuthority(commonName: str = "tlsuite test CA") -> CertificateAuthority:
    """
    Make a self-signed root certificate authority.

    @param commonName: the authority's subject common name.
    @return: the authority, ready to L{issue <CertificateAuthority.issue>}.
    """
    key = _newKey()
    name = _name(commonName)
    notBefore, notAfter = _validity()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(notBefore)
        .not_valid_after(notAfter)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .add_extension(_caKeyUsage(), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return CertificateAuthority(key, certificate)


def namesOf(certificatePEM: Union[bytes, x509.Certificate]) -> Sequence[str]:
    """
    The DNS names in a certificate's SAN, or its common name when it has no
    SAN: what a test checks to see which certificate a server presented.

    @param certificatePEM: a PEM certificate or a parsed one.
    """
    certificate: x509.Certificate
    if isinstance(certificatePEM, bytes):
        certificate = x509.load_pem_x509_certificate(certificatePEM)
    else:
        certificate = certificatePEM
    san: Optional[x509.SubjectAlternativeName]
    try:
        san = certificate.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        return san.get_values_for_type(x509.DNSName)
    return [
        str(a.value)
        for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
