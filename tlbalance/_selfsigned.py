"""
Self-signed certificates for a first run: the demo's HTTPS listener, the
TLS benchmarks and tests.

No module of the balancer imports this one: a production listener serves
the certificates its operator gives it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from typing import List, Sequence, Union

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["ensureSelfSigned", "selfSignedPEM"]


def selfSignedPEM(hostnames: Sequence[str], days: int = 825) -> bytes:
    """
    Make a private key and a self-signed certificate for C{hostnames}, in one
    PEM blob (key first): what an C{ssl:} endpoint or a C{tlsni:} directory
    reads.

    @param hostnames: DNS names and IP literals; all go in the SAN (IPs as IP
        addresses), the first one is also the common name.
    @param days: validity, from an hour ago: exactly C{days} days, so the
        default stays within the 825 days testssl.sh accepts.
    """
    if not hostnames:
        raise ValueError("a certificate needs at least one host name")
    altNames: List[x509.GeneralName] = []
    for name in hostnames:
        try:
            altNames.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            altNames.append(x509.DNSName(name))
    # A common name longer than 64 characters is invalid; the SAN suffices.
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0])]
        if len(hostnames[0]) <= 64
        else []
    )
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(
            now - datetime.timedelta(hours=1) + datetime.timedelta(days=days)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .add_extension(x509.SubjectAlternativeName(altNames), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    keyPEM = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return keyPEM + certificate.public_bytes(serialization.Encoding.PEM)


def ensureSelfSigned(
    path: Union[str, os.PathLike[str]], hostnames: Sequence[str]
) -> bool:
    """
    Write a L{selfSignedPEM} for C{hostnames} to C{path}, readable by its
    owner only, unless the file already exists.

    @return: C{True} when the file was written, C{False} when it was there.
    """
    pem = selfSignedPEM(hostnames)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
    except BaseException:
        os.unlink(path)
        raise
    return True
