# -*- test-case-name: tests.unit.test_proxyprotocol -*-
"""
The PROXY protocol (versions 1 and 2): encoders and an incremental parser.

Pure byte-level code with no I/O, shared by the balancer (which writes the
header to its backends) and by L{tlbalance.upstream} (which reads it).  The
parser is strict: anything the specification does not allow is rejected with
L{InvalidProxyHeader} and a message saying what is wrong, as early as the
bytes already received prove that the header cannot be valid.
"""

from __future__ import annotations

import os
import socket
from typing import Iterable, List, NoReturn, Optional, Sequence, Tuple, Union

from attrs import frozen
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress

__all__ = [
    "DEFAULT_MAX_V2_LENGTH",
    "MAX_V1_LENGTH",
    "PP2_CLIENT_CERT_CONN",
    "PP2_CLIENT_CERT_SESS",
    "PP2_CLIENT_SSL",
    "PP2_SUBTYPE_SSL_CIPHER",
    "PP2_SUBTYPE_SSL_CLIENT_CERT",
    "PP2_SUBTYPE_SSL_CN",
    "PP2_SUBTYPE_SSL_GROUP",
    "PP2_SUBTYPE_SSL_KEY_ALG",
    "PP2_SUBTYPE_SSL_SIG_ALG",
    "PP2_SUBTYPE_SSL_SIG_SCHEME",
    "PP2_SUBTYPE_SSL_VERSION",
    "PP2_TYPE_ALPN",
    "PP2_TYPE_AUTHORITY",
    "PP2_TYPE_CRC32C",
    "PP2_TYPE_NETNS",
    "PP2_TYPE_NOOP",
    "PP2_TYPE_SSL",
    "PP2_TYPE_UNIQUE_ID",
    "V1_SIGNATURE",
    "V2_FIXED_LENGTH",
    "V2_SIGNATURE",
    "HeaderParser",
    "InvalidProxyHeader",
    "ProxyHeader",
    "SSLInfo",
    "crc32c",
    "encodeV1",
    "encodeV2",
    "encodeV2Local",
    "parseHeader",
    "parseSSLTLV",
    "sslTLV",
]

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_SIGNATURE = b"PROXY "

#: The longest valid v1 line, CRLF included: C{UNKNOWN} with two full IPv6
#: addresses and ports.
MAX_V1_LENGTH = 107

#: The fixed part of a v2 header: signature, version/command, family, length.
V2_FIXED_LENGTH = 16

#: The default cap on a whole v2 header: the fixed part, the largest address
#: block (two 108-byte unix paths) and 4 KiB of TLVs.  Real senders stay far
#: below it (HAProxy with every TLV it knows, client certificate excepted,
#: writes a few hundred bytes), and a cap keeps one connection from making
#: the receiver buffer up to 64 KiB before anything is known about it.
DEFAULT_MAX_V2_LENGTH = V2_FIXED_LENGTH + 216 + 4096

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_SUBTYPE_SSL_GROUP = 0x26
PP2_SUBTYPE_SSL_SIG_SCHEME = 0x27
PP2_SUBTYPE_SSL_CLIENT_CERT = 0x28
PP2_TYPE_NETNS = 0x30

#: Bits of the C{client} field of a C{PP2_TYPE_SSL} TLV.
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04

_MAX_UNIQUE_ID = 128
_UNIX_NAME_LENGTH = 108
_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"

_COMMAND_LOCAL = 0x0
_COMMAND_PROXY = 0x1

_FAMILY_UNSPEC = 0x00
_FAMILY_TCP4 = 0x11
_FAMILY_TCP6 = 0x21
_FAMILY_UNIX = 0x31

#: Address block length for each family/transport byte this receiver
#: accepts.  The specification lists these and the datagram variants; every
#: other value "must be rejected as invalid by receivers".
_ADDRESS_LENGTHS = {
    _FAMILY_UNSPEC: 0,
    _FAMILY_TCP4: 12,
    _FAMILY_TCP6: 36,
    _FAMILY_UNIX: 216,
}
_DATAGRAM_FAMILIES = {
    0x12: "UDP over IPv4",
    0x22: "UDP over IPv6",
    0x32: "unix datagram",
}

_V1_PROTOCOLS = (b"TCP4", b"TCP6", b"UNKNOWN")
_DIGITS = frozenset(b"0123456789")
_IPV6_CHARACTERS = frozenset(b"0123456789abcdefABCDEF:.")
#: Longest text form C{inet_pton} accepts: six groups of four hex digits
#: and an embedded dotted quad.
_MAX_IPV6_TEXT = len("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255")


class InvalidProxyHeader(ValueError):  # noqa: N818 (name fixed by the contract)
    """
    The bytes received are not a valid PROXY protocol header; the message
    says why.
    """


@frozen
class ProxyHeader:
    """
    A parsed PROXY header.

    @ivar version: 1 or 2.
    @ivar local: C{True} for a v2 C{LOCAL} command, a v2 C{PROXY} command
        with the C{AF_UNSPEC} family, or a v1 C{UNKNOWN} line: the receiver
        uses the real endpoints of the connection.
    @ivar source: the original client address, or C{None} when C{local}.
    @ivar destination: the address the client connected to, or C{None} when
        C{local}.
    @ivar tlvs: the v2 TLVs as C{(type, value)} pairs in wire order (empty
        for v1).
    """

    version: int
    local: bool
    source: Optional[IAddress]
    destination: Optional[IAddress]
    tlvs: Tuple[Tuple[int, bytes], ...] = ()

    def tlv(self, kind: int) -> Optional[bytes]:
        """
        The value of the first TLV of type C{kind}, or C{None} if the header
        has none.
        """
        for tlvKind, value in self.tlvs:
            if tlvKind == kind:
                return value
        return None


@frozen
class SSLInfo:
    """
    The decoded value of a C{PP2_TYPE_SSL} TLV.

    @ivar client: the C{PP2_CLIENT_*} bits.
    @ivar verify: zero when the client presented a certificate that was
        verified, non-zero otherwise.
    @ivar tlvs: the sub-TLVs (C{PP2_SUBTYPE_SSL_*}) in wire order.
    """

    client: int
    verify: int
    tlvs: Tuple[Tuple[int, bytes], ...] = ()

    def tlv(self, kind: int) -> Optional[bytes]:
        """
        The value of the first sub-TLV of type C{kind}, or C{None}.
        """
        for tlvKind, value in self.tlvs:
            if tlvKind == kind:
                return value
        return None


# CRC32C (Castagnoli), reflected polynomial 0x82F63B78, as RFC 4960
# appendix B asks.  Only a few hundred bytes per connection go through it, so
# a byte-at-a-time table is fast enough and needs no compiled dependency.
def _crcTable() -> Tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crcTable()


def crc32c(data: bytes) -> int:
    """
    The CRC32C (Castagnoli) checksum of C{data}, as the PP2_TYPE_CRC32C TLV
    carries it.

    @return: an unsigned 32-bit integer.
    """
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ---------------------------------------------------------------- encoding


def _ipEndpoint(address: Optional[IAddress]) -> Optional[Tuple[bytes, int]]:
    """
    The packed IP (4 bytes for IPv4, including IPv4-mapped IPv6, else 16)
    and port of an IP address object, or C{None} for anything else.

    @raise ValueError: the host is not a numeric address or the port is out
        of range.
    """
    if isinstance(address, IPv4Address):
        family = socket.AF_INET
    elif isinstance(address, IPv6Address):
        family = socket.AF_INET6
    else:
        return None
    # A zone ("fe80::1%eth0") only means something on the proxy's own host
    # and the protocol has no field for it.
    host = address.host.split("%", 1)[0]
    try:
        packed = socket.inet_pton(family, host)
    except (OSError, ValueError):
        raise ValueError(f"not a numeric IP address: {address.host!r}") from None
    if not 0 <= address.port <= 0xFFFF:
        raise ValueError(f"port out of range 0..65535: {address.port!r}")
    if len(packed) == 16 and packed.startswith(_MAPPED_PREFIX):
        packed = packed[12:]
    return packed, address.port


def _asIPv6(packed: bytes) -> bytes:
    return packed if len(packed) == 16 else _MAPPED_PREFIX + packed


def _textIP(packed: bytes) -> str:
    family = socket.AF_INET if len(packed) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, packed)


def encodeV1(source: Optional[IAddress], destination: Optional[IAddress]) -> bytes:
    """
    A v1 (text) header for a connection from C{source} to C{destination}.

    IPv4 pairs (IPv4-mapped IPv6 counts as IPv4) are written as C{TCP4},
    other IP pairs as C{TCP6} (an IPv4 side as C{::ffff:a.b.c.d}), and
    anything else (unix sockets, C{None}) as C{PROXY UNKNOWN}, which tells
    the receiver to use the real endpoints.

    @raise ValueError: an IP address is not numeric or a port out of range.
    """
    src = _ipEndpoint(source)
    dst = _ipEndpoint(destination)
    if src is None or dst is None:
        return b"PROXY UNKNOWN\r\n"
    if len(src[0]) == 4 and len(dst[0]) == 4:
        proto = "TCP4"
        srcHost, dstHost = _textIP(src[0]), _textIP(dst[0])
    else:
        proto = "TCP6"
        srcHost, dstHost = _textIP(_asIPv6(src[0])), _textIP(_asIPv6(dst[0]))
    line = f"PROXY {proto} {srcHost} {dstHost} {src[1]} {dst[1]}\r\n"
    return line.encode("ascii")


def _unixName(address: UNIXAddress) -> bytes:
    name = address.name
    if name is None:
        raw = b""
    elif isinstance(name, bytes):
        raw = name
    else:
        raw = os.fsencode(name)
    if len(raw) > _UNIX_NAME_LENGTH:
        raise ValueError(
            f"unix socket name longer than {_UNIX_NAME_LENGTH} bytes: {name!r}"
        )
    return raw.ljust(_UNIX_NAME_LENGTH, b"\x00")


def _checkTLV(kind: int, value: bytes) -> None:
    """
    Check one TLV against the rules of the specification.

    @raise ValueError: with a message naming the problem.
    """
    if not isinstance(kind, int) or not 0 <= kind <= 0xFF:
        raise ValueError(f"TLV type must be an integer 0..255, not {kind!r}")
    if not isinstance(value, bytes):
        raise ValueError(f"TLV 0x{kind:02x} value must be bytes, not {value!r}")
    if len(value) > 0xFFFF:
        raise ValueError(
            f"TLV 0x{kind:02x} is {len(value)} bytes long; the limit is 65535"
        )
    if kind == PP2_TYPE_UNIQUE_ID and len(value) > _MAX_UNIQUE_ID:
        raise ValueError(
            f"PP2_TYPE_UNIQUE_ID is {len(value)} bytes long; "
            f"the limit is {_MAX_UNIQUE_ID}"
        )
    if kind == PP2_TYPE_SSL:
        parseSSLTLV(value)


def _packTLVs(tlvs: Iterable[Tuple[int, bytes]]) -> bytes:
    out = bytearray()
    for kind, value in tlvs:
        _checkTLV(kind, value)
        out += bytes([kind]) + len(value).to_bytes(2, "big") + value
    return bytes(out)


def _assembleV2(
    command: int,
    family: int,
    addresses: bytes,
    tlvs: Iterable[Tuple[int, bytes]],
    withCRC: bool,
) -> bytes:
    tlvs = list(tlvs)
    for kind, _ in tlvs:
        if kind == PP2_TYPE_CRC32C:
            raise ValueError(
                "pass crc32c=True instead of a PP2_TYPE_CRC32C TLV: "
                "the checksum covers the whole header"
            )
    body = addresses + _packTLVs(tlvs)
    if withCRC:
        body += bytes([PP2_TYPE_CRC32C, 0, 4]) + b"\x00" * 4
    if len(body) > 0xFFFF:
        raise ValueError(
            f"addresses and TLVs take {len(body)} bytes; a v2 header holds "
            "at most 65535"
        )
    header = (
        V2_SIGNATURE
        + bytes([0x20 | command, family])
        + len(body).to_bytes(2, "big")
        + body
    )
    if withCRC:
        header = header[:-4] + crc32c(header).to_bytes(4, "big")
    return header


def encodeV2(
    source: Optional[IAddress],
    destination: Optional[IAddress],
    tlvs: Iterable[Tuple[int, bytes]] = (),
    crc32c: bool = False,
) -> bytes:
    """
    A v2 (binary) header for a stream connection from C{source} to
    C{destination}.

    IPv4 pairs are written as C{AF_INET}; other IP pairs as C{AF_INET6}
    (an IPv4 side v4-mapped); two unix addresses as C{AF_UNIX} (an unnamed
    socket gives an empty name); C{(None, None)} as the C{LOCAL} command; any
    other mix as C{PROXY} with C{AF_UNSPEC}, which tells the receiver to use
    the real endpoints.

    @param tlvs: C{(type, value)} pairs written in order after the
        addresses.
    @param crc32c: append a C{PP2_TYPE_CRC32C} TLV checksumming the whole
        header.
    @raise ValueError: an address or TLV cannot be encoded (a TLV longer than
        65535 bytes, a unix name longer than 108, a C{PP2_TYPE_CRC32C} TLV
        passed by hand, ...).
    """
    if source is None and destination is None:
        return encodeV2Local(tlvs, crc32c)
    src = _ipEndpoint(source)
    dst = _ipEndpoint(destination)
    if src is not None and dst is not None:
        if len(src[0]) == 4 and len(dst[0]) == 4:
            family = _FAMILY_TCP4
            srcIP, dstIP = src[0], dst[0]
        else:
            family = _FAMILY_TCP6
            srcIP, dstIP = _asIPv6(src[0]), _asIPv6(dst[0])
        addresses = (
            srcIP + dstIP + src[1].to_bytes(2, "big") + dst[1].to_bytes(2, "big")
        )
    elif isinstance(source, UNIXAddress) and isinstance(destination, UNIXAddress):
        family = _FAMILY_UNIX
        addresses = _unixName(source) + _unixName(destination)
    else:
        family = _FAMILY_UNSPEC
        addresses = b""
    return _assembleV2(_COMMAND_PROXY, family, addresses, tlvs, crc32c)


def encodeV2Local(
    tlvs: Iterable[Tuple[int, bytes]] = (), crc32c: bool = False
) -> bytes:
    """
    A v2 C{LOCAL} header: the connection was made by the proxy itself (a
    health check, say) and the receiver uses the real endpoints.

    @param tlvs: see L{encodeV2}.
    @param crc32c: see L{encodeV2}.
    """
    return _assembleV2(_COMMAND_LOCAL, _FAMILY_UNSPEC, b"", tlvs, crc32c)


def _text(value: Union[str, bytes]) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def sslTLV(
    version: Union[str, bytes],
    cipher: Union[str, bytes],
    *,
    client: int = PP2_CLIENT_SSL,
    verify: int = 1,
    commonName: Union[str, bytes, None] = None,
    signatureAlgorithm: Union[str, bytes, None] = None,
    keyAlgorithm: Union[str, bytes, None] = None,
    group: Union[str, bytes, None] = None,
    signatureScheme: Union[str, bytes, None] = None,
    clientCertificate: Optional[bytes] = None,
) -> bytes:
    """
    The value of a C{PP2_TYPE_SSL} TLV describing the client's TLS
    connection; pass it on as C{(PP2_TYPE_SSL, sslTLV(...))} in the C{tlvs}
    of L{encodeV2}.

    @param version: the protocol version, e.g. C{"TLSv1.3"}.
    @param cipher: the cipher name, e.g. C{"TLS_AES_128_GCM_SHA256"}.
    @param client: C{PP2_CLIENT_*} bits; C{PP2_CLIENT_SSL} by default.
    @param verify: zero only when the client presented a certificate that
        was verified (the specification's meaning); 1 by default.
    @param commonName: the client certificate's common name, if any.
    @param clientCertificate: the client certificate, DER.
    @return: the TLV value: client (1 byte), verify (4 bytes), sub-TLVs in
        type order.
    @raise ValueError: a field does not fit its length field.
    """
    if not 0 <= client <= 0xFF:
        raise ValueError(f"client flags must fit one byte: {client!r}")
    if not 0 <= verify <= 0xFFFFFFFF:
        raise ValueError(f"verify must fit 32 bits: {verify!r}")
    subs: List[Tuple[int, bytes]] = [(PP2_SUBTYPE_SSL_VERSION, _text(version))]
    optional: Sequence[Tuple[int, Union[str, bytes, None]]] = (
        (PP2_SUBTYPE_SSL_CN, commonName),
        (PP2_SUBTYPE_SSL_CIPHER, cipher),
        (PP2_SUBTYPE_SSL_SIG_ALG, signatureAlgorithm),
        (PP2_SUBTYPE_SSL_KEY_ALG, keyAlgorithm),
        (PP2_SUBTYPE_SSL_GROUP, group),
        (PP2_SUBTYPE_SSL_SIG_SCHEME, signatureScheme),
        (PP2_SUBTYPE_SSL_CLIENT_CERT, clientCertificate),
    )
    subs += [(kind, _text(value)) for kind, value in optional if value is not None]
    value = bytes([client]) + verify.to_bytes(4, "big") + _packTLVs(subs)
    if len(value) > 0xFFFF:
        raise ValueError(f"the SSL TLV would be {len(value)} bytes; the limit is 65535")
    return value


def _splitTLVs(block: bytes, where: str) -> List[Tuple[int, bytes]]:
    """
    Split a run of TLVs.

    @raise ValueError: the run does not end exactly on a TLV boundary.
    """
    tlvs = []
    offset = 0
    while offset < len(block):
        left = len(block) - offset
        if left < 3:
            raise ValueError(
                f"{left} byte(s) left at the end of the {where}, too few for a "
                "TLV (type and length take 3)"
            )
        kind = block[offset]
        length = int.from_bytes(block[offset + 1 : offset + 3], "big")
        if length > left - 3:
            raise ValueError(
                f"TLV 0x{kind:02x} claims {length} bytes but only {left - 3} "
                f"remain in the {where}"
            )
        tlvs.append((kind, block[offset + 3 : offset + 3 + length]))
        offset += 3 + length
    return tlvs


def parseSSLTLV(value: bytes) -> SSLInfo:
    """
    Decode the value of a C{PP2_TYPE_SSL} TLV.

    @raise ValueError: the value is shorter than its fixed fields or its
        sub-TLVs overrun it.
    """
    if len(value) < 5:
        raise ValueError(
            f"PP2_TYPE_SSL TLV is {len(value)} bytes; it needs at least 5 "
            "(client flags and verify result)"
        )
    subs = _splitTLVs(value[5:], "PP2_TYPE_SSL TLV")
    return SSLInfo(value[0], int.from_bytes(value[1:5], "big"), tuple(subs))


# ----------------------------------------------------------------- parsing


def _describe(data: bytes) -> str:
    return repr(bytes(data[:24])) + ("..." if len(data) > 24 else "")


def _validOctet(octet: bytes) -> bool:
    return (
        0 < len(octet) <= 3
        and set(octet) <= _DIGITS
        and not (len(octet) > 1 and octet.startswith(b"0"))
        and int(octet) <= 255
    )


def _ipv4Prefix(token: bytes) -> bool:
    """
    Whether C{token} can be the start of a valid dotted quad.
    """
    octets = token.split(b".")
    whole, last = octets[:-1], octets[-1]
    return (
        len(octets) <= 4
        and all(_validOctet(o) for o in whole)
        and (not last or _validOctet(last))
    )


def _parseIPv4(token: bytes) -> str:
    octets = token.split(b".")
    if not (len(octets) == 4 and all(_validOctet(o) for o in octets)):
        raise InvalidProxyHeader(
            f"{_describe(token)} is not an IPv4 address in dotted-quad form "
            "without leading zeros"
        )
    text = token.decode("ascii")
    try:
        socket.inet_pton(socket.AF_INET, text)
    except OSError:
        raise InvalidProxyHeader(f"{text!r} is not an IPv4 address") from None
    return text


def _parseIPv6(token: bytes) -> str:
    if b"%" in token:
        raise InvalidProxyHeader(
            f"{_describe(token)}: zoned IPv6 addresses (with %scope) are not allowed"
        )
    if not token or not set(token) <= _IPV6_CHARACTERS:
        raise InvalidProxyHeader(f"{_describe(token)} is not an IPv6 address")
    text = token.decode("ascii")
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except (OSError, ValueError):
        pass
    else:
        return socket.inet_ntop(socket.AF_INET6, packed)
    try:
        socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):
        raise InvalidProxyHeader(f"{text!r} is not an IPv6 address") from None
    # nginx's stream module is known to write these.
    raise InvalidProxyHeader(f"{text!r} is an IPv4 address but the line says TCP6")


def _parsePort(token: bytes) -> int:
    if (
        not token
        or len(token) > 5
        or not set(token) <= _DIGITS
        or (len(token) > 1 and token.startswith(b"0"))
        or int(token) > 0xFFFF
    ):
        raise InvalidProxyHeader(
            f"{_describe(token)} is not a port: a decimal number 0..65535 "
            "without leading zeros or sign"
        )
    return int(token)


def _checkPartialV1(line: bytes) -> None:
    """
    Check the start of a v1 line whose CRLF has not arrived yet.

    @raise InvalidProxyHeader: no continuation of C{line} can be valid.
    """
    if line.endswith(b"\r"):
        # Only an LF may follow, which would end the line right here.
        _parseV1Line(line[:-1])
        return
    _checkNoStrayTerminator(line)
    tokens = line.split(b" ")
    complete, last = tokens[:-1], tokens[-1]
    if not complete:
        if not b"PROXY".startswith(last):
            _notProxy(line)
        return
    if complete[0] != b"PROXY":
        _notProxy(line)
    if len(complete) == 1:
        if not any(p.startswith(last) for p in _V1_PROTOCOLS):
            _badProtocol(last)
        return
    protocol = complete[1]
    _checkProtocol(protocol)
    if protocol == b"UNKNOWN":
        return
    fields = complete[2:]
    _checkNoEmptyField(fields)
    if len(fields) >= 4:
        raise InvalidProxyHeader(
            "extra field after the destination port in the PROXY v1 line"
        )
    _parseFields(protocol, fields)
    # The field still arriving is judged by what it can still become: every
    # prefix of a valid port is a valid port, a dotted quad is checked octet
    # by octet, an IPv6 address only by its characters and length.
    if len(fields) >= 2:
        if last:
            _parsePort(last)
    elif protocol == b"TCP4":
        if not _ipv4Prefix(last):
            raise InvalidProxyHeader(
                f"{_describe(last)} cannot be the start of an IPv4 address in "
                "dotted-quad form without leading zeros"
            )
    else:
        if b"%" in last:
            _parseIPv6(last)
        if not set(last) <= _IPV6_CHARACTERS or len(last) > _MAX_IPV6_TEXT:
            raise InvalidProxyHeader(
                f"{_describe(last)} cannot be the start of an IPv6 address"
            )


def _checkNoStrayTerminator(data: bytes) -> None:
    if b"\r" in data or b"\n" in data:
        raise InvalidProxyHeader(
            "a lone CR or LF in the PROXY v1 line: only CRLF ends the line"
        )


def _notProxy(data: bytes) -> NoReturn:
    raise InvalidProxyHeader(
        f"not a PROXY protocol header: the connection starts with {_describe(data)}"
    )


def _badProtocol(token: bytes) -> NoReturn:
    raise InvalidProxyHeader(
        f"unknown PROXY v1 protocol {_describe(token)}: "
        "expected TCP4, TCP6 or UNKNOWN after one space"
    )


def _checkProtocol(token: bytes) -> None:
    if token not in _V1_PROTOCOLS:
        _badProtocol(token)


def _checkNoEmptyField(fields: Sequence[bytes]) -> None:
    if b"" in fields:
        raise InvalidProxyHeader(
            "empty field in the PROXY v1 line: fields are separated by "
            "exactly one space"
        )


def _parseFields(
    protocol: bytes, fields: Sequence[bytes]
) -> Tuple[List[str], List[int]]:
    """
    Validate the complete fields of a C{TCP4}/C{TCP6} line: addresses
    first, then ports.
    """
    hosts: List[str] = []
    ports: List[int] = []
    for index, token in enumerate(fields):
        if index < 2:
            parse = _parseIPv4 if protocol == b"TCP4" else _parseIPv6
            hosts.append(parse(token))
        else:
            ports.append(_parsePort(token))
    return hosts, ports


def _parseV1Line(line: bytes) -> ProxyHeader:
    """
    Parse a whole v1 line, CRLF excluded.
    """
    _checkNoStrayTerminator(line)
    tokens = line.split(b" ")
    if tokens[0] != b"PROXY":
        _notProxy(line)
    if len(tokens) < 2:
        raise InvalidProxyHeader("PROXY v1 line without a protocol")
    protocol = tokens[1]
    _checkProtocol(protocol)
    if protocol == b"UNKNOWN":
        return ProxyHeader(version=1, local=True, source=None, destination=None)
    fields = tokens[2:]
    _checkNoEmptyField(fields)
    if len(fields) > 4:
        raise InvalidProxyHeader(
            "extra field after the destination port in the PROXY v1 line"
        )
    if len(fields) < 4:
        raise InvalidProxyHeader(
            f"PROXY v1 {protocol.decode()} line has {len(fields)} of its 4 "
            "fields (source, destination, source port, destination port)"
        )
    (srcHost, dstHost), (srcPort, dstPort) = _parseFields(protocol, fields)
    addressType = IPv4Address if protocol == b"TCP4" else IPv6Address
    return ProxyHeader(
        version=1,
        local=False,
        source=addressType("TCP", srcHost, srcPort),
        destination=addressType("TCP", dstHost, dstPort),
    )


def _unixAddress(raw: bytes) -> UNIXAddress:
    name = raw.rstrip(b"\x00")
    # An unnamed socket is what Twisted itself reports as UNIXAddress(None).
    return UNIXAddress(os.fsdecode(name) if name else None)


def _parseV2(data: bytes, maxLength: int) -> Optional[Tuple[ProxyHeader, bytes]]:
    """
    Parse a v2 header from the start of C{data}, or return C{None} if more
    bytes are needed.
    """
    if not V2_SIGNATURE.startswith(data[:12]):
        _notProxy(data)
    if len(data) < 13:
        return None
    version, command = data[12] >> 4, data[12] & 0x0F
    if version != 2:
        raise InvalidProxyHeader(
            f"PROXY v2 signature with version {version}: only version 2 exists"
        )
    if command not in (_COMMAND_LOCAL, _COMMAND_PROXY):
        raise InvalidProxyHeader(
            f"PROXY v2 command {command} is neither LOCAL (0) nor PROXY (1)"
        )
    if len(data) < 14:
        return None
    family = data[13]
    if family in _DATAGRAM_FAMILIES:
        raise InvalidProxyHeader(
            f"PROXY v2 header for a datagram connection "
            f"({_DATAGRAM_FAMILIES[family]}): this receiver handles streams only"
        )
    if family not in _ADDRESS_LENGTHS:
        raise InvalidProxyHeader(
            f"PROXY v2 address family/transport byte 0x{family:02x} is not "
            "defined by the specification"
        )
    if len(data) < V2_FIXED_LENGTH:
        return None
    length = int.from_bytes(data[14:16], "big")
    total = V2_FIXED_LENGTH + length
    if total > maxLength:
        raise InvalidProxyHeader(
            f"PROXY v2 header of {total} bytes is over this receiver's "
            f"{maxLength}-byte limit"
        )
    addressLength = _ADDRESS_LENGTHS[family]
    if length < addressLength:
        raise InvalidProxyHeader(
            f"PROXY v2 length {length} is shorter than the {addressLength}-byte "
            f"address block family 0x{family:02x} needs"
        )
    if len(data) < total:
        return None
    header, rest = data[:total], data[total:]
    tlvStart = V2_FIXED_LENGTH + addressLength
    try:
        tlvs = _splitTLVs(header[tlvStart:], "PROXY v2 header")
        for kind, value in tlvs:
            _checkTLV(kind, value)
    except ValueError as e:
        raise InvalidProxyHeader(str(e)) from None
    _verifyChecksum(header, tlvStart, tlvs)
    block = header[V2_FIXED_LENGTH:tlvStart]
    source: Optional[IAddress] = None
    destination: Optional[IAddress] = None
    if command == _COMMAND_PROXY:
        if family == _FAMILY_TCP4:
            source = IPv4Address("TCP", _textIP(block[0:4]), _port(block, 8))
            destination = IPv4Address("TCP", _textIP(block[4:8]), _port(block, 10))
        elif family == _FAMILY_TCP6:
            source = IPv6Address("TCP", _textIP(block[0:16]), _port(block, 32))
            destination = IPv6Address("TCP", _textIP(block[16:32]), _port(block, 34))
        elif family == _FAMILY_UNIX:
            source = _unixAddress(block[:_UNIX_NAME_LENGTH])
            destination = _unixAddress(block[_UNIX_NAME_LENGTH:])
    parsed = ProxyHeader(
        version=2,
        local=source is None,
        source=source,
        destination=destination,
        tlvs=tuple(tlvs),
    )
    return parsed, rest


def _port(block: bytes, offset: int) -> int:
    return int.from_bytes(block[offset : offset + 2], "big")


def _verifyChecksum(
    header: bytes, tlvStart: int, tlvs: Sequence[Tuple[int, bytes]]
) -> None:
    """
    Check the C{PP2_TYPE_CRC32C} TLV, if the header carries one.
    """
    offset = tlvStart
    found = None
    for kind, value in tlvs:
        if kind == PP2_TYPE_CRC32C:
            if found is not None:
                raise InvalidProxyHeader("PROXY v2 header with two CRC32C TLVs")
            if len(value) != 4:
                raise InvalidProxyHeader(
                    f"PROXY v2 CRC32C TLV of {len(value)} bytes: it must be 4"
                )
            found = offset + 3
        offset += 3 + len(value)
    if found is None:
        return
    expected = int.from_bytes(header[found : found + 4], "big")
    actual = crc32c(header[:found] + b"\x00" * 4 + header[found + 4 :])
    if expected != actual:
        raise InvalidProxyHeader(
            f"PROXY v2 CRC32C mismatch: the header says 0x{expected:08x}, "
            f"its bytes give 0x{actual:08x}"
        )


def _parseV1(data: bytes) -> Optional[Tuple[ProxyHeader, bytes]]:
    """
    Parse a v1 line from the start of C{data}, or return C{None} if more
    bytes are needed.
    """
    end = data.find(b"\r\n", 0, MAX_V1_LENGTH)
    if end < 0:
        _checkPartialV1(data[:MAX_V1_LENGTH])
        # For the line to fit, its CR must come at index 105 at the latest.
        last = MAX_V1_LENGTH - 2
        if len(data) > last + 1 or (len(data) == last + 1 and data[last] != 0x0D):
            raise InvalidProxyHeader(
                f"no CRLF within the first {MAX_V1_LENGTH} bytes of the PROXY v1 line"
            )
        return None
    return _parseV1Line(data[:end]), data[end + 2 :]


class HeaderParser:
    """
    Reads one PROXY header (v1 or v2, detected from the first byte) from the
    start of a connection, however the bytes are split.

    One parser serves one connection.  It buffers at most one header and
    raises L{InvalidProxyHeader} as soon as the bytes received prove that
    no valid header can follow.

    @ivar maxV2Length: the largest whole v2 header accepted, in bytes.  A
        header announcing more is rejected before its body is buffered.
    """

    def __init__(self, maxV2Length: int = DEFAULT_MAX_V2_LENGTH) -> None:
        """
        @param maxV2Length: see L{HeaderParser.maxV2Length}; at least 16.
            The default, L{DEFAULT_MAX_V2_LENGTH}, fits any address block and
            4 KiB of TLVs.
        """
        if maxV2Length < V2_FIXED_LENGTH:
            raise ValueError(f"maxV2Length must be at least {V2_FIXED_LENGTH}")
        self.maxV2Length = maxV2Length
        self._buffer = b""
        self._finished = False

    def feed(self, data: bytes) -> Optional[Tuple[ProxyHeader, bytes]]:
        """
        Take the next bytes of the connection.

        @return: C{None} while the header is incomplete; once, when it is
            complete, the header and the bytes that followed it.
        @raise InvalidProxyHeader: the bytes cannot start a valid header.
        @raise RuntimeError: the parser already returned a header or raised.
        """
        if self._finished:
            raise RuntimeError("this PROXY header parser has already finished")
        buffered = self._buffer + data
        try:
            if not buffered:
                result = None
            elif buffered[0] == V1_SIGNATURE[0]:
                result = _parseV1(buffered)
            elif buffered[0] == V2_SIGNATURE[0]:
                result = _parseV2(buffered, self.maxV2Length)
            else:
                _notProxy(buffered)
        except BaseException:
            self._finished = True
            self._buffer = b""
            raise
        if result is None:
            self._buffer = buffered
            return None
        self._finished = True
        self._buffer = b""
        return result


def parseHeader(
    data: bytes, maxV2Length: int = DEFAULT_MAX_V2_LENGTH
) -> Tuple[ProxyHeader, bytes]:
    """
    Parse a header that has been received whole.

    @return: the header and the bytes after it.
    @raise InvalidProxyHeader: C{data} is invalid or holds only part of a
        header.
    """
    result = HeaderParser(maxV2Length).feed(data)
    if result is None:
        raise InvalidProxyHeader(
            f"incomplete PROXY header: {len(data)} bytes, {_describe(data)}"
        )
    return result
