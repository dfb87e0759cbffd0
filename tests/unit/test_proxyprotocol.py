"""
Tests for L{tlbalance.proxyprotocol}: the PROXY v1/v2 codec.

Most cases are data: headers that must parse to a given result, headers that
must be refused, and bytes our encoders must write exactly.  The vectors come
from the specification's worked examples, icgood/proxy-protocol's CRC32C
tests, go-proxyproto's reject tables and HAProxy's TLV regression test.
"""

from __future__ import annotations

import os
import socket
from typing import Callable, List, Optional, Sequence, Tuple

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.interfaces import IAddress
from twisted.protocols.haproxy._v1parser import V1Parser
from twisted.protocols.haproxy._v2parser import V2Parser
from twisted.trial.unittest import SynchronousTestCase

from tlbalance.proxyprotocol import (
    DEFAULT_MAX_V2_LENGTH,
    MAX_V1_LENGTH,
    PP2_CLIENT_CERT_CONN,
    PP2_CLIENT_CERT_SESS,
    PP2_CLIENT_SSL,
    PP2_SUBTYPE_SSL_CIPHER,
    PP2_SUBTYPE_SSL_CLIENT_CERT,
    PP2_SUBTYPE_SSL_CN,
    PP2_SUBTYPE_SSL_VERSION,
    PP2_TYPE_ALPN,
    PP2_TYPE_AUTHORITY,
    PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP,
    PP2_TYPE_SSL,
    PP2_TYPE_UNIQUE_ID,
    V2_SIGNATURE,
    HeaderParser,
    InvalidProxyHeader,
    ProxyHeader,
    crc32c,
    encodeV1,
    encodeV2,
    encodeV2Local,
    parseHeader,
    parseSSLTLV,
    sslTLV,
)

SIG = V2_SIGNATURE


def v4(host: str, port: int) -> IPv4Address:
    """
    A TCP IPv4 address.
    """
    return IPv4Address("TCP", host, port)


def v6(host: str, port: int) -> IPv6Address:
    """
    A TCP IPv6 address.
    """
    return IPv6Address("TCP", host, port)


# --------------------------------------------------------------- vectors

# The worked examples of balancer.md section 2.4, computed from the spec.
SPEC_TCP4 = bytes.fromhex(
    "0d0a0d0a000d0a515549540a 2111000c c0000201 c6336407 dc04 01bb"
)
SPEC_LOCAL = bytes.fromhex("0d0a0d0a000d0a515549540a 20000000")
SPEC_TCP6 = bytes.fromhex(
    "0d0a0d0a000d0a515549540a 21210024"
    "20010db8000000000000000000000001"
    "20010db8000000000000000000000002"
    "dc04 01bb"
)
SPEC_V1 = b"PROXY TCP4 192.0.2.1 198.51.100.7 56324 443\r\n"

# icgood/proxy-protocol test_v2.py: headers carrying a CRC32C TLV.
ICGOOD_LOCAL = SIG + b"\x20\x00\x00\x07\x03\x00\x04\xa9\xb8~\x8f"
ICGOOD_LOCAL_BAD_CRC = SIG + b"\x20\x00\x00\x07\x03\x00\x04\xa9\xb8!\x8f"
ICGOOD_TCP4 = (
    SIG
    + b"\x21\x11\x00\x13"
    + b"\x00\x00\x00\x00\x7f\x00\x00\x01\x00\x00\x00\x19"
    + b"\x03\x00\x04%\xc9\x11r"
)
ICGOOD_TCP6 = (
    SIG
    + b"!!\x00+"
    + (b"\x00" * 15 + b"\x01") * 2
    + b"\x00\x00\x00\x19"
    + b"\x03\x00\x04p\x86\x92\xe9"
)
ICGOOD_UNIX = (
    SIG
    + b"\x21\x31\x00\xdf"
    + b"abc"
    + b"\x00" * 105
    + b"defghi"
    + b"\x00" * 102
    + b"\x03\x00\x04W\x8a\x8e\xb4"
)
ICGOOD_UNSPEC = SIG + b"!\x00\x00\x07\x03\x00\x04>\xc9\x89N"
# CRC first, then a NOOP holding junk, UNIQUE_ID and an SSL TLV.
ICGOOD_TLVS = (
    SIG
    + b"!\x00\x00m"
    + b'\x03\x00\x04\x16\xb5"\x85\x04\x00/\x88\x1by'
    + b"\xc1\xce\x96\x85\xb0\x01\x00\x10compression_name"
    + b"\x02\x00\x02\x00{\x04\x00\x0cdnsbl_result\x05\x00"
    + b"\rconnection_id \x00!\x01\x00\x00\x00\x01!\x00"
    + b"\x0bssl_version#\x00\x0bcipher_name"
)
ICGOOD_SSL_VALUE = b"\x01\x00\x00\x00\x01!\x00\x0bssl_version#\x00\x0bcipher_name"

LONG6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
UNKNOWN_107 = f"PROXY UNKNOWN {LONG6} {LONG6} 65535 65535\r\n".encode()
UNKNOWN_108 = UNKNOWN_107[:-2] + b" \r\n"
TCP6_104 = f"PROXY TCP6 {LONG6} {LONG6} 65535 65535\r\n".encode()
TCP4_BLOCK = bytes([127, 0, 0, 1, 127, 0, 0, 1]) + (65533).to_bytes(2, "big") * 2
TCP6_BLOCK = socket.inet_pton(socket.AF_INET6, "::1") * 2 + b"\xff\xfd\xff\xfd"
UNIX_BLOCK = b"socket".ljust(108, b"\x00") * 2


def _twoChecksums() -> bytes:
    header = SIG + b"\x20\x00\x00\x0e" + b"\x03\x00\x04abcd" + b"\x03\x00\x04"
    return header + crc32c(header + b"\x00" * 4).to_bytes(4, "big")


TWO_CRCS = _twoChecksums()

# (description, header, expected source, expected destination); headers end
# with CRLF, and parsing them gives local=True exactly when source is None.
V1_VALID: List[Tuple[str, bytes, Optional[IAddress], Optional[IAddress]]] = [
    ("spec example", SPEC_V1, v4("192.0.2.1", 56324), v4("198.51.100.7", 443)),
    (
        "lowest and highest",
        b"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
        v4("0.0.0.0", 0),
        v4("255.255.255.255", 65535),
    ),
    (
        "TCP6",
        b"PROXY TCP6 2001:db8::1 2001:db8::2 56324 443\r\n",
        v6("2001:db8::1", 56324),
        v6("2001:db8::2", 443),
    ),
    (
        "TCP6 written in full and in capitals comes out canonical",
        b"PROXY TCP6 2001:0DB8:0:0:0:0:0:1 0:0:0:0:0:0:0:1 1 2\r\n",
        v6("2001:db8::1", 1),
        v6("::1", 2),
    ),
    (
        "TCP6 with IPv4-mapped addresses (go-proxyproto TCP4IN6)",
        b"PROXY TCP6 ::ffff:127.0.0.1 ::ffff:127.0.0.1 65533 65533\r\n",
        v6("::ffff:127.0.0.1", 65533),
        v6("::ffff:127.0.0.1", 65533),
    ),
    ("the longest TCP6 line", TCP6_104, v6(LONG6, 65535), v6(LONG6, 65535)),
    ("UNKNOWN alone", b"PROXY UNKNOWN\r\n", None, None),
    (
        "UNKNOWN ignores the rest of the line, even invalid ports",
        b"PROXY UNKNOWN 127.0.0.1 127.0.0.1 65536 65536\r\n",
        None,
        None,
    ),
    ("UNKNOWN at the 107-byte limit", UNKNOWN_107, None, None),
]

# (description, bytes): none of these is a valid v1 header, whole or in part.
V1_INVALID: List[Tuple[str, bytes]] = [
    ("HTTP instead of PROXY", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("lowercase", b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("PROXY lf", b"PROXY \n"),
    ("PROXY crlf", b"PROXY \r\n"),
    ("PROXY without space", b"PROXY\r\n"),
    ("PROXYjunk", b"PROXYjunk\r\n"),
    ("PROXYTCP4", b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("tab separator", b"PROXY\tTCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("unknown protocol", b"PROXY SOMETHING\r\n"),
    ("TCP5", b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("UNKNOWNX", b"PROXY UNKNOWNX\r\n"),
    ("invalid addresses", b"PROXY TCP4 invalid invalid 65533 65533\r\n"),
    ("TCP6 with IPv4", b"PROXY TCP6 127.0.0.1 127.0.0.1 65533 65533\r\n"),
    ("TCP4 with IPv6", b"PROXY TCP4 ::1 ::1 65533 65533\r\n"),
    ("TCP4 with IPv4-mapped", b"PROXY TCP4 ::ffff:127.0.0.1 127.0.0.1 1 2\r\n"),
    ("zoned IPv6", b"PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n"),
    ("two :: in IPv6", b"PROXY TCP6 1::2::3 ::1 1 2\r\n"),
    ("leading zero octet", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"),
    ("octet over 255", b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n"),
    ("three octets", b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n"),
    ("five octets", b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n"),
    ("port 65536", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
    ("plus sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n"),
    ("minus sign", b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n"),
    ("leading zero port", b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n"),
    ("double space", b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"),
    ("double space after PROXY", b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
    ("extra field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n"),
    ("trailing space", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n"),
    ("missing port", b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"),
    ("addresses only", b"PROXY TCP4 1.2.3.4 5.6.7.8\r\n"),
    ("lone CR inside", b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n"),
    ("lone LF ends", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
    ("lone LF in UNKNOWN", b"PROXY UNKNOWN a\nb\r\n"),
    ("LF CR", b"PROXY UNKNOWN\n\r"),
    ("108 bytes with CRLF", UNKNOWN_108),
    ("no CRLF within 107 bytes", b"PROXY UNKNOWN " + b"a" * 200),
    ("NUL in an address", b"PROXY TCP4 1.2.3.\x004 5.6.7.8 1 2\r\n"),
]

# (description, bytes, index of the byte that proves the header invalid):
# the parser must refuse at that byte, not later.
EARLY_REJECTS: List[Tuple[str, bytes, int]] = [
    ("HTTP", b"GET / HTTP/1.1\r\n", 0),
    ("TLS ClientHello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 0),
    ("SSH banner", b"SSH-2.0-OpenSSH\r\n", 0),
    ("PROXYjunk", b"PROXYjunk", 5),
    ("PROXYTCP4", b"PROXYTCP4", 5),
    ("TCP5", b"PROXY TCP5 ", 9),
    ("leading zero octet", b"PROXY TCP4 01.2.3.4 ", 12),
    ("zone", b"PROXY TCP6 fe80::1%eth0 ", 18),
    ("leading zero port", b"PROXY TCP4 1.2.3.4 5.6.7.8 080", 28),
    ("plus", b"PROXY TCP4 1.2.3.4 5.6.7.8 +80", 27),
    ("extra field", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", 30),
    ("port over 65535", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536", 31),
    ("lone LF", b"PROXY \n", 6),
    ("lone LF in UNKNOWN", b"PROXY UNKNOWN a\n", 15),
    ("lone CR in UNKNOWN", b"PROXY UNKNOWN a\ra", 16),
    ("CR too early", b"PROXY TCP4 1.2.3.4\r\n", 18),
    ("no room left for CRLF", b"PROXY UNKNOWN " + b"a" * 100, 105),
    ("v2 signature typo", SIG[:11] + b"X", 11),
    ("v2 version 1", SIG + b"\x11\x11", 12),
    ("v2 command 2", SIG + b"\x22\x11", 12),
    ("v2 datagram", SIG + b"\x21\x12\x00\x0c", 13),
    ("v2 family 4", SIG + b"\x21\x41\x00\x0c", 13),
    ("v2 over the size cap", SIG + b"\x21\x11\xff\xff", 15),
    ("v2 length below the address block", SIG + b"\x21\x21\x00\x0c", 15),
]

# (description, header, expected ProxyHeader) for v2, each followed by a
# tail that must come back as the rest.
V2_VALID: List[Tuple[str, bytes, ProxyHeader]] = [
    (
        "spec TCP4 example",
        SPEC_TCP4,
        ProxyHeader(2, False, v4("192.0.2.1", 56324), v4("198.51.100.7", 443)),
    ),
    (
        "spec TCP6 example",
        SPEC_TCP6,
        ProxyHeader(2, False, v6("2001:db8::1", 56324), v6("2001:db8::2", 443)),
    ),
    ("spec LOCAL example", SPEC_LOCAL, ProxyHeader(2, True, None, None)),
    (
        "icgood LOCAL with CRC32C",
        ICGOOD_LOCAL,
        ProxyHeader(2, True, None, None, ((PP2_TYPE_CRC32C, b"\xa9\xb8~\x8f"),)),
    ),
    (
        "icgood TCP4 with CRC32C",
        ICGOOD_TCP4,
        ProxyHeader(
            2,
            False,
            v4("0.0.0.0", 0),
            v4("127.0.0.1", 25),
            ((PP2_TYPE_CRC32C, b"%\xc9\x11r"),),
        ),
    ),
    (
        "icgood TCP6 with CRC32C",
        ICGOOD_TCP6,
        ProxyHeader(
            2,
            False,
            v6("::1", 0),
            v6("::1", 25),
            ((PP2_TYPE_CRC32C, b"p\x86\x92\xe9"),),
        ),
    ),
    (
        "icgood UNIX with CRC32C",
        ICGOOD_UNIX,
        ProxyHeader(
            2,
            False,
            UNIXAddress("abc"),
            UNIXAddress("defghi"),
            ((PP2_TYPE_CRC32C, b"W\x8a\x8e\xb4"),),
        ),
    ),
    (
        "icgood PROXY with AF_UNSPEC and CRC32C: use the real endpoints",
        ICGOOD_UNSPEC,
        ProxyHeader(2, True, None, None, ((PP2_TYPE_CRC32C, b">\xc9\x89N"),)),
    ),
    (
        "LOCAL with TCP4 addresses ignores them (go-proxyproto)",
        SIG + b"\x20\x11\x00\x0c" + TCP4_BLOCK,
        ProxyHeader(2, True, None, None),
    ),
    (
        "LOCAL honours its length: the TLV is part of the header",
        SIG + b"\x20\x00\x00\x07" + b"\x04\x00\x04abcd",
        ProxyHeader(2, True, None, None, ((PP2_TYPE_NOOP, b"abcd"),)),
    ),
    (
        "TCP4 padded with empty TLVs (go-proxyproto padded)",
        SIG + b"\x21\x11\x00\x54" + TCP4_BLOCK + b"\x00" * 72,
        ProxyHeader(
            2,
            False,
            v4("127.0.0.1", 65533),
            v4("127.0.0.1", 65533),
            ((0, b""),) * 24,
        ),
    ),
    (
        "TCP6 padded with empty TLVs (go-proxyproto padded)",
        SIG + b"\x21\x21\x00\x54" + TCP6_BLOCK + b"\x00" * 48,
        ProxyHeader(2, False, v6("::1", 65533), v6("::1", 65533), ((0, b""),) * 16),
    ),
    (
        "UNIX stream",
        SIG + b"\x21\x31\x00\xd8" + UNIX_BLOCK,
        ProxyHeader(2, False, UNIXAddress("socket"), UNIXAddress("socket")),
    ),
    (
        "TCP4 with AUTHORITY (HAProxy proxy_protocol_tlv_validation.vtc)",
        SIG + b"\x21\x11\x00\x1a" + TCP4_BLOCK + b"\x02\x00\x0bexample.com",
        ProxyHeader(
            2,
            False,
            v4("127.0.0.1", 65533),
            v4("127.0.0.1", 65533),
            ((PP2_TYPE_AUTHORITY, b"example.com"),),
        ),
    ),
    (
        "a 2 KiB TLV",
        SIG + b"\x21\x11\x08\x0f" + TCP4_BLOCK + b"\xe0\x08\x00" + b"z" * 2048,
        ProxyHeader(
            2,
            False,
            v4("127.0.0.1", 65533),
            v4("127.0.0.1", 65533),
            ((0xE0, b"z" * 2048),),
        ),
    ),
]

V2_INVALID: List[Tuple[str, bytes]] = [
    ("truncated signature", SIG[2:] + b"\x21\x11\x00\x00"),
    ("version 9 and command 9", SIG + b"\x99\x11\x00\x00"),
    ("version 1", SIG + b"\x11\x11\x00\x0c" + TCP4_BLOCK),
    ("version 3", SIG + b"\x31\x11\x00\x0c" + TCP4_BLOCK),
    ("command 2", SIG + b"\x22\x11\x00\x0c" + TCP4_BLOCK),
    ("command 15", SIG + b"\x2f\x11\x00\x0c" + TCP4_BLOCK),
    ("family byte 0x99", SIG + b"\x21\x99\x00\x00"),
    ("undefined transport 0x13", SIG + b"\x21\x13\x00\x0c" + TCP4_BLOCK),
    ("INET with UNSPEC transport", SIG + b"\x21\x10\x00\x0c" + TCP4_BLOCK),
    ("UNSPEC family with STREAM", SIG + b"\x21\x01\x00\x00"),
    ("UDP over IPv4", SIG + b"\x21\x12\x00\x0c" + TCP4_BLOCK),
    ("UDP over IPv6", SIG + b"\x21\x22\x00\x24" + TCP6_BLOCK),
    ("unix datagram", SIG + b"\x21\x32\x00\xd8" + UNIX_BLOCK),
    ("TCP4 length 0 with addresses after it", SIG + b"\x21\x11\x00\x00" + TCP4_BLOCK),
    ("TCP6 length of TCP4", SIG + b"\x21\x21\x00\x0c" + TCP6_BLOCK),
    ("UNIX length of TCP6", SIG + b"\x21\x31\x00\x24" + UNIX_BLOCK),
    ("LOCAL with TCP4 family but no addresses", SIG + b"\x20\x11\x00\x00"),
    ("LOCAL with two stray bytes", SIG + b"\x20\x00\x00\x02\x04\x00"),
    (
        "TLV overrunning the header (HAProxy vtc)",
        SIG + b"\x21\x11\x00\x10" + TCP4_BLOCK + b"\x02\x00\x05ab",
    ),
    ("TLV header cut short", SIG + b"\x21\x11\x00\x0e" + TCP4_BLOCK + b"\x02\x00"),
    ("CRC32C mismatch (icgood)", ICGOOD_LOCAL_BAD_CRC),
    ("CRC32C of 3 bytes", SIG + b"\x20\x00\x00\x06\x03\x00\x03abc"),
    ("two CRC32C TLVs, the second one right", TWO_CRCS),
    (
        "UNIQUE_ID over 128 bytes",
        SIG + b"\x20\x00\x00\x84" + b"\x05\x00\x81" + b"u" * 129,
    ),
    ("SSL TLV of 3 bytes", SIG + b"\x20\x00\x00\x06" + b"\x20\x00\x03\x01\x00\x00"),
    (
        "SSL sub-TLV overrunning the SSL TLV",
        SIG + b"\x20\x00\x00\x0c" + b"\x20\x00\x09\x01\x00\x00\x00\x00\x21\x00\x09x",
    ),
    ("over the 4 KiB default cap", SIG + b"\x21\x00\x10\xe9" + b"\x04\x10\xe6"),
]


def feedPieces(
    data: bytes, sizes: Sequence[int]
) -> Optional[Tuple[ProxyHeader, bytes]]:
    """
    Feed C{data} to a new parser in pieces of the given sizes, then the rest.
    """
    parser = HeaderParser()
    offset = 0
    for size in sizes:
        result = parser.feed(data[offset : offset + size])
        offset += size
        if result is not None:
            header, rest = result
            return header, rest + data[offset:]
    return parser.feed(data[offset:])


def wholeFeed(data: bytes) -> Optional[Tuple[ProxyHeader, bytes]]:
    """
    Feed C{data} to a new parser at once.
    """
    return HeaderParser().feed(data)


def feedBytewise(data: bytes) -> Optional[Tuple[ProxyHeader, bytes]]:
    """
    Feed C{data} one byte at a time; gather what follows the header.
    """
    return feedPieces(data, [1] * len(data))


def refused(data: bytes, parse: Callable[[bytes], object]) -> bool:
    """
    Whether C{parse} refuses C{data} with L{InvalidProxyHeader}.
    """
    try:
        parse(data)
    except InvalidProxyHeader:
        return True
    return False


# ----------------------------------------------------------------- tests


class CRC32CTests(SynchronousTestCase):
    """
    L{crc32c} is the Castagnoli checksum the PP2_TYPE_CRC32C TLV carries.
    """

    def test_checkValue(self) -> None:
        """
        The standard check input C{"123456789"} gives 0xE3069283, the value
        every CRC32C implementation publishes.
        """
        self.assertEqual(crc32c(b"123456789"), 0xE3069283)

    def test_empty(self) -> None:
        """
        The checksum of nothing is zero.
        """
        self.assertEqual(crc32c(b""), 0)

    def test_icgoodVector(self) -> None:
        """
        The CRC of icgood's LOCAL header with its CRC field zeroed is the
        value that header carries.
        """
        zeroed = ICGOOD_LOCAL[:-4] + b"\x00" * 4
        self.assertEqual(crc32c(zeroed).to_bytes(4, "big"), ICGOOD_LOCAL[-4:])


class V1ParseTests(SynchronousTestCase):
    """
    Strict parsing of the text header.
    """

    def test_valid(self) -> None:
        """
        Each valid line gives its addresses (or local=True for UNKNOWN), and
        the bytes after the CRLF come back untouched, whether the header is
        fed at once or one byte at a time.
        """
        for description, line, source, destination in V1_VALID:
            for result in [
                parseHeader(line + b"GET /"),
                feedBytewise(line + b"GET /"),
            ]:
                self.assertEqual(
                    result,
                    (ProxyHeader(1, source is None, source, destination), b"GET /"),
                    description,
                )

    def test_boundaries(self) -> None:
        """
        A 107-byte UNKNOWN line is the longest accepted; the longest TCP6
        line is 104 bytes.
        """
        self.assertEqual(len(UNKNOWN_107), MAX_V1_LENGTH)
        self.assertEqual(len(TCP6_104), 104)
        self.assertTrue(parseHeader(UNKNOWN_107)[0].local)
        self.assertTrue(refused(UNKNOWN_108, wholeFeed))

    def test_invalid(self) -> None:
        """
        Each invalid line is refused with L{InvalidProxyHeader}, fed at once
        or byte by byte.
        """
        for description, data in V1_INVALID:
            self.assertTrue(refused(data, wholeFeed), description)
            self.assertTrue(refused(data, feedBytewise), description)

    def test_messages(self) -> None:
        """
        The error says what is wrong in words an operator understands.
        """
        cases = [
            (b"GET / HTTP/1.1\r\n", "not a PROXY protocol header"),
            (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", "zoned"),
            (
                b"PROXY TCP6 127.0.0.1 ::1 1 2\r\n",
                "IPv4 address but the line says TCP6",
            ),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "leading zeros"),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", "extra field"),
            (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "exactly one space"),
            (b"PROXY UNKNOWN a\nb\r\n", "lone CR or LF"),
            (b"PROXY UNKNOWN " + b"a" * 200, "no CRLF within the first 107 bytes"),
            (UNKNOWN_108, "no CRLF within the first 107 bytes"),
        ]
        for data, words in cases:
            error = self.assertRaises(InvalidProxyHeader, parseHeader, data)
            self.assertIn(words, str(error))


class V2ParseTests(SynchronousTestCase):
    """
    Strict parsing of the binary header.
    """

    def test_valid(self) -> None:
        """
        Each valid header parses to the expected addresses and TLVs and
        leaves the following bytes alone.
        """
        tail = b"\x99\x97\x98"
        for description, data, expected in V2_VALID:
            self.assertEqual(parseHeader(data + tail), (expected, tail), description)
            self.assertEqual(feedBytewise(data + tail), (expected, tail), description)

    def test_icgoodTLVs(self) -> None:
        """
        icgood's header with CRC32C, NOOP, UNIQUE_ID and SSL TLVs parses, and
        the SSL TLV's sub-TLVs are readable.
        """
        header, rest = parseHeader(ICGOOD_TLVS)
        self.assertEqual(rest, b"")
        self.assertTrue(header.local)
        self.assertEqual(header.tlv(PP2_TYPE_UNIQUE_ID), b"connection_id")
        self.assertEqual(
            [kind for kind, _ in header.tlvs],
            [PP2_TYPE_CRC32C, PP2_TYPE_NOOP, PP2_TYPE_UNIQUE_ID, PP2_TYPE_SSL],
        )
        ssl = parseSSLTLV(header.tlv(PP2_TYPE_SSL) or b"")
        self.assertEqual((ssl.client, ssl.verify), (PP2_CLIENT_SSL, 1))
        self.assertEqual(ssl.tlv(PP2_SUBTYPE_SSL_VERSION), b"ssl_version")
        self.assertEqual(ssl.tlv(PP2_SUBTYPE_SSL_CIPHER), b"cipher_name")
        self.assertIsNone(ssl.tlv(PP2_SUBTYPE_SSL_CN))

    def test_tlvLookup(self) -> None:
        """
        L{ProxyHeader.tlv} returns the first TLV of a type, or C{None}.
        """
        header = ProxyHeader(2, True, None, None, ((1, b"a"), (2, b"b"), (1, b"c")))
        self.assertEqual(header.tlv(1), b"a")
        self.assertEqual(header.tlv(2), b"b")
        self.assertIsNone(header.tlv(3))

    def test_invalid(self) -> None:
        """
        Each invalid header is refused with L{InvalidProxyHeader}, fed at
        once or byte by byte.
        """
        for description, data in V2_INVALID:
            self.assertTrue(refused(data, wholeFeed), description)
            self.assertTrue(refused(data, feedBytewise), description)

    def test_messages(self) -> None:
        """
        The error says what is wrong.
        """
        cases = [
            (SIG + b"\x21\x12\x00\x0c" + TCP4_BLOCK, "streams only"),
            (ICGOOD_LOCAL_BAD_CRC, "CRC32C mismatch"),
            (SIG + b"\x11\x11\x00\x00", "version 1"),
            (SIG + b"\x21\x11\xff\xff", "limit"),
            (SIG + b"\x21\x21\x00\x0c" + TCP6_BLOCK, "shorter than the 36-byte"),
            (SIG + b"\x21\x11\x00\x10" + TCP4_BLOCK + b"\x02\x00\x05ab", "claims 5"),
            (SIG + b"\x21\x11\x00\x0e" + TCP4_BLOCK + b"\x02\x00", "too few for a TLV"),
            (TWO_CRCS, "two CRC32C TLVs"),
        ]
        for data, words in cases:
            error = self.assertRaises(InvalidProxyHeader, parseHeader, data)
            self.assertIn(words, str(error))

    def test_incompleteIsInvalidWhenWhole(self) -> None:
        """
        L{parseHeader} refuses a header that stops short, such as the bare
        signature or a TCP6 header whose addresses never came.
        """
        for data in [b"", SIG, SIG + b"\x21\x21\x00\x24" + TCP4_BLOCK]:
            error = self.assertRaises(InvalidProxyHeader, parseHeader, data)
            self.assertIn("incomplete", str(error))

    def test_unixNames(self) -> None:
        """
        Unix names lose their NUL padding; an empty name is an unnamed socket,
        which Twisted itself reports as C{UNIXAddress(None)}.
        """
        block = b"/run/app.sock".ljust(108, b"\x00") + b"\x00" * 108
        header, _ = parseHeader(SIG + b"\x21\x31\x00\xd8" + block)
        self.assertEqual(header.source, UNIXAddress("/run/app.sock"))
        self.assertEqual(header.destination, UNIXAddress(None))


class EarlyRejectTests(SynchronousTestCase):
    """
    The parser refuses on the first byte that proves the header invalid, so
    a client speaking HTTP to a PROXY port is dropped at once, not after the
    header timeout.
    """

    def test_earlyRejects(self) -> None:
        """
        Fed byte by byte, each input is accepted as incomplete up to the
        byte that proves it invalid, and refused exactly there.
        """
        for description, data, index in EARLY_REJECTS:
            parser = HeaderParser()
            for position, byte in enumerate(data[:index]):
                self.assertIsNone(
                    parser.feed(bytes([byte])), f"{description} at {position}"
                )
            self.assertRaises(InvalidProxyHeader, parser.feed, data[index : index + 1])

    def test_validPrefixesWait(self) -> None:
        """
        Every proper prefix of every valid header is incomplete, never
        refused.
        """
        headers = [line for _, line, _, _ in V1_VALID] + [h for _, h, _ in V2_VALID]
        for header in headers:
            for end in range(len(header)):
                self.assertIsNone(HeaderParser().feed(header[:end]))


class HeaderParserTests(SynchronousTestCase):
    """
    L{HeaderParser} is fed a connection's bytes as they come.
    """

    def test_emptyFeed(self) -> None:
        """
        Feeding no bytes neither completes nor refuses anything.
        """
        parser = HeaderParser()
        self.assertIsNone(parser.feed(b""))
        self.assertIsNone(parser.feed(b"PRO"))
        self.assertIsNone(parser.feed(b""))

    def test_feedAfterCompletion(self) -> None:
        """
        The header is returned once; feeding afterwards is a programming
        error, not a bad header.
        """
        parser = HeaderParser()
        self.assertIsNotNone(parser.feed(SPEC_LOCAL))
        self.assertRaises(RuntimeError, parser.feed, b"x")

    def test_feedAfterFailure(self) -> None:
        """
        A parser that refused a header refuses to go on.
        """
        parser = HeaderParser()
        self.assertRaises(InvalidProxyHeader, parser.feed, b"GET")
        self.assertRaises(RuntimeError, parser.feed, b"x")

    def test_restAfterSplitHeader(self) -> None:
        """
        When the last piece of a header brings application bytes with it,
        they come back as the rest.
        """
        parser = HeaderParser()
        self.assertIsNone(parser.feed(SPEC_V1[:20]))
        self.assertEqual(parser.feed(SPEC_V1[20:] + b"GET /")[1], b"GET /")

    def test_sizeCap(self) -> None:
        """
        The v2 size cap is a parser argument: a header of exactly that size
        is accepted and one byte more is refused as soon as its length field
        is read.
        """
        body = b"\x04" + (40 - 3).to_bytes(2, "big") + b"n" * 37
        header = SIG + b"\x20\x00\x00\x28" + body
        self.assertEqual(len(header), 56)
        self.assertEqual(HeaderParser(maxV2Length=56).feed(header)[1], b"")
        bigger = SIG + b"\x20\x00\x00\x29"
        self.assertRaises(InvalidProxyHeader, HeaderParser(maxV2Length=56).feed, bigger)

    def test_defaultCap(self) -> None:
        """
        The default cap holds the largest address block and 4 KiB of TLVs.
        """
        self.assertEqual(DEFAULT_MAX_V2_LENGTH, 16 + 216 + 4096)
        tlv = b"\x04" + (4093).to_bytes(2, "big") + b"n" * 4093
        header = SIG + b"\x21\x31" + (216 + 4096).to_bytes(2, "big") + UNIX_BLOCK + tlv
        self.assertEqual(len(header), DEFAULT_MAX_V2_LENGTH)
        self.assertEqual(parseHeader(header)[0].source, UNIXAddress("socket"))

    def test_tinyCap(self) -> None:
        """
        A cap smaller than the fixed v2 part is a configuration mistake.
        """
        self.assertRaises(ValueError, HeaderParser, 15)


class EncodeV1Tests(SynchronousTestCase):
    """
    L{encodeV1} writes the text header.
    """

    def test_specExample(self) -> None:
        """
        The spec's example line is written byte for byte.
        """
        self.assertEqual(
            encodeV1(v4("192.0.2.1", 56324), v4("198.51.100.7", 443)), SPEC_V1
        )

    def test_ipv6(self) -> None:
        """
        IPv6 peers are written as TCP6 in canonical compressed form.
        """
        self.assertEqual(
            encodeV1(v6("2001:DB8:0::1", 1), v6("::1", 2)),
            b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n",
        )

    def test_mappedIsTCP4(self) -> None:
        """
        An IPv4-mapped IPv6 peer (a dual-stack listener's view of an IPv4
        client) is written as TCP4 with the plain IPv4 address.
        """
        self.assertEqual(
            encodeV1(v6("::ffff:192.0.2.1", 5), v6("::ffff:10.0.0.1", 80)),
            b"PROXY TCP4 192.0.2.1 10.0.0.1 5 80\r\n",
        )
        self.assertEqual(
            encodeV1(v6("::ffff:192.0.2.1", 5), v4("10.0.0.1", 80)),
            b"PROXY TCP4 192.0.2.1 10.0.0.1 5 80\r\n",
        )

    def test_mixedFamilies(self) -> None:
        """
        An IPv4 client on an IPv6 listener is written as TCP6 with the IPv4
        side v4-mapped, a line the receiver accepts.
        """
        line = encodeV1(v4("192.0.2.1", 5), v6("2001:db8::1", 80))
        self.assertEqual(line, b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 5 80\r\n")
        self.assertEqual(parseHeader(line)[0].destination, v6("2001:db8::1", 80))

    def test_zoneDropped(self) -> None:
        """
        A link-local zone has no place in the header and is left out.
        """
        self.assertEqual(
            encodeV1(v6("fe80::1%eth0", 1), v6("fe80::2%eth0", 2)),
            b"PROXY TCP6 fe80::1 fe80::2 1 2\r\n",
        )

    def test_unknown(self) -> None:
        """
        Unix sockets and missing addresses give C{PROXY UNKNOWN}.
        """
        for source, destination in [
            (UNIXAddress("/a"), UNIXAddress("/b")),
            (UNIXAddress(None), v4("1.2.3.4", 5)),
            (None, None),
            (v4("1.2.3.4", 5), None),
        ]:
            self.assertEqual(encodeV1(source, destination), b"PROXY UNKNOWN\r\n")

    def test_rejects(self) -> None:
        """
        Hostnames and out-of-range ports cannot be written.
        """
        self.assertRaises(ValueError, encodeV1, v4("localhost", 1), v4("1.2.3.4", 2))
        self.assertRaises(ValueError, encodeV1, v4("1.2.3.4", 65536), v4("1.2.3.4", 2))
        self.assertRaises(ValueError, encodeV1, v6("1.2.3.4", 1), v6("::1", 2))


class EncodeV2Tests(SynchronousTestCase):
    """
    L{encodeV2} and L{encodeV2Local} write the binary header.
    """

    def test_specExamples(self) -> None:
        """
        The spec's TCP4, TCP6 and LOCAL examples are written byte for byte.
        """
        self.assertEqual(
            encodeV2(v4("192.0.2.1", 56324), v4("198.51.100.7", 443)), SPEC_TCP4
        )
        self.assertEqual(
            encodeV2(v6("2001:db8::1", 56324), v6("2001:db8::2", 443)), SPEC_TCP6
        )
        self.assertEqual(encodeV2(None, None), SPEC_LOCAL)
        self.assertEqual(encodeV2Local(), SPEC_LOCAL)

    def test_icgoodCRC32C(self) -> None:
        """
        With C{crc32c=True}, the headers match icgood/proxy-protocol's
        vectors byte for byte.
        """
        cases = [
            (v4("0.0.0.0", 0), v4("127.0.0.1", 25), ICGOOD_TCP4),
            (v6("::1", 0), v6("::1", 25), ICGOOD_TCP6),
            (UNIXAddress("abc"), UNIXAddress("defghi"), ICGOOD_UNIX),
            (UNIXAddress("abc"), v4("127.0.0.1", 25), ICGOOD_UNSPEC),
            (None, None, ICGOOD_LOCAL),
        ]
        for source, destination, expected in cases:
            self.assertEqual(encodeV2(source, destination, crc32c=True), expected)
        self.assertEqual(encodeV2Local(crc32c=True), ICGOOD_LOCAL)

    def test_mixedFamilies(self) -> None:
        """
        A v4/v6 pair is written as INET6 with the IPv4 side v4-mapped; a
        mapped pair is written as INET.
        """
        header = encodeV2(v4("192.0.2.1", 5), v6("2001:db8::1", 80))
        self.assertEqual(header[13], 0x21)
        self.assertEqual(parseHeader(header)[0].source, v6("::ffff:192.0.2.1", 5))
        header = encodeV2(v6("::ffff:192.0.2.1", 5), v6("::ffff:10.0.0.1", 80))
        self.assertEqual(header[13], 0x11)
        self.assertEqual(parseHeader(header)[0].source, v4("192.0.2.1", 5))

    def test_unnamedUnixClient(self) -> None:
        """
        An unnamed unix client is written with an empty name.
        """
        header = encodeV2(UNIXAddress(None), UNIXAddress("/run/lb.sock"))
        self.assertEqual(header[16:124], b"\x00" * 108)
        self.assertEqual(header[124:136], b"/run/lb.sock")

    def test_tlvsInOrder(self) -> None:
        """
        TLVs are written in the order given, after the addresses, and the
        CRC32C TLV comes last.
        """
        header = encodeV2(
            v4("1.2.3.4", 1),
            v4("5.6.7.8", 2),
            tlvs=[(PP2_TYPE_AUTHORITY, b"example.com"), (PP2_TYPE_ALPN, b"h2")],
            crc32c=True,
        )
        parsed, _ = parseHeader(header)
        self.assertEqual(
            [kind for kind, _ in parsed.tlvs],
            [PP2_TYPE_AUTHORITY, PP2_TYPE_ALPN, PP2_TYPE_CRC32C],
        )
        self.assertEqual(parsed.tlv(PP2_TYPE_AUTHORITY), b"example.com")
        self.assertEqual(header[28:31], b"\x02\x00\x0b")

    def test_rejects(self) -> None:
        """
        The encoder refuses what would make an invalid header.
        """
        a, b = v4("1.2.3.4", 1), v4("5.6.7.8", 2)
        self.assertRaises(ValueError, encodeV2, a, b, tlvs=[(0xE0, b"x" * 65536)])
        self.assertRaises(ValueError, encodeV2, a, b, tlvs=[(256, b"")])
        self.assertRaises(ValueError, encodeV2, a, b, tlvs=[(-1, b"")])
        self.assertRaises(ValueError, encodeV2, a, b, tlvs=[(PP2_TYPE_CRC32C, b"abcd")])
        self.assertRaises(
            ValueError, encodeV2, a, b, tlvs=[(PP2_TYPE_UNIQUE_ID, b"u" * 129)]
        )
        self.assertRaises(ValueError, encodeV2, a, b, tlvs=[(PP2_TYPE_SSL, b"\x01")])
        self.assertRaises(
            ValueError,
            encodeV2,
            a,
            b,
            tlvs=[(0xE0, b"x" * 40000), (0xE1, b"y" * 40000)],
        )
        self.assertRaises(
            ValueError, encodeV2, UNIXAddress("x" * 109), UNIXAddress("/b")
        )
        self.assertRaises(ValueError, encodeV2Local, tlvs=[(PP2_TYPE_CRC32C, b"")])

    def test_uniqueIdLimit(self) -> None:
        """
        A 128-byte UNIQUE_ID, the spec's maximum, is written and read back.
        """
        header = encodeV2Local(tlvs=[(PP2_TYPE_UNIQUE_ID, b"u" * 128)])
        self.assertEqual(parseHeader(header)[0].tlv(PP2_TYPE_UNIQUE_ID), b"u" * 128)


class SSLTLVTests(SynchronousTestCase):
    """
    L{sslTLV} builds the value of a PP2_TYPE_SSL TLV.
    """

    def test_icgoodLayout(self) -> None:
        """
        Version and cipher alone give the layout of icgood's vector: client
        flags SSL, verify 1 (no verified client certificate), then VERSION
        and CIPHER.
        """
        self.assertEqual(sslTLV("ssl_version", "cipher_name"), ICGOOD_SSL_VALUE)

    def test_allFields(self) -> None:
        """
        Every field given comes back from L{parseSSLTLV}.
        """
        value = sslTLV(
            "TLSv1.3",
            "TLS_AES_128_GCM_SHA256",
            client=PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS,
            verify=0,
            commonName="alice",
            clientCertificate=b"\x30\x82DER",
        )
        info = parseSSLTLV(value)
        self.assertEqual(info.client, 7)
        self.assertEqual(info.verify, 0)
        self.assertEqual(info.tlv(PP2_SUBTYPE_SSL_VERSION), b"TLSv1.3")
        self.assertEqual(info.tlv(PP2_SUBTYPE_SSL_CIPHER), b"TLS_AES_128_GCM_SHA256")
        self.assertEqual(info.tlv(PP2_SUBTYPE_SSL_CN), b"alice")
        self.assertEqual(info.tlv(PP2_SUBTYPE_SSL_CLIENT_CERT), b"\x30\x82DER")

    def test_inHeader(self) -> None:
        """
        The value travels in a v2 header and is validated on the way in.
        """
        header = encodeV2(
            v4("1.2.3.4", 1), v4("5.6.7.8", 2), tlvs=[(PP2_TYPE_SSL, sslTLV("v", "c"))]
        )
        self.assertEqual(parseHeader(header)[0].tlv(PP2_TYPE_SSL), sslTLV("v", "c"))

    def test_rejects(self) -> None:
        """
        Out-of-range flags and oversized fields are refused.
        """
        self.assertRaises(ValueError, sslTLV, "v", "c", client=256)
        self.assertRaises(ValueError, sslTLV, "v", "c", verify=2**32)
        self.assertRaises(ValueError, sslTLV, "v", "c", clientCertificate=b"x" * 65536)
        self.assertRaises(
            ValueError,
            sslTLV,
            "v",
            "c",
            commonName="x" * 40000,
            clientCertificate=b"x" * 40000,
        )
        self.assertRaises(ValueError, parseSSLTLV, b"\x01\x00")


# ------------------------------------------------------ property tests

ports = st.integers(min_value=0, max_value=65535)
ipv4s = st.builds(v4, st.ip_addresses(v=4).map(str), ports)
ipv6s = st.builds(v6, st.ip_addresses(v=6).map(str), ports)
ipAddresses = st.one_of(ipv4s, ipv6s)
unixNames = st.binary(max_size=108).map(lambda raw: raw.rstrip(b"\x00"))
unixAddresses = st.builds(
    UNIXAddress, unixNames.map(lambda raw: os.fsdecode(raw) if raw else None)
)
# Types our parser gives meaning to (CRC32C, UNIQUE_ID, SSL) have their own
# tests; everything else is opaque bytes.
tlvKinds = st.integers(0, 255).filter(
    lambda k: k not in (PP2_TYPE_CRC32C, PP2_TYPE_UNIQUE_ID, PP2_TYPE_SSL)
)
tlvLists = st.lists(st.tuples(tlvKinds, st.binary(max_size=64)), max_size=4)
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def packedIP(address: IAddress) -> Tuple[bytes, int]:
    """
    The packed IP of an address as IPv6 (IPv4 v4-mapped), and its port, so
    that addresses can be compared however their text is written.
    """
    assert isinstance(address, (IPv4Address, IPv6Address))
    host = address.host
    if isinstance(address, IPv4Address):
        return b"\x00" * 10 + b"\xff\xff" + socket.inet_pton(socket.AF_INET, host), (
            address.port
        )
    return socket.inet_pton(socket.AF_INET6, host), address.port


def sameEndpoint(a: Optional[IAddress], b: Optional[IAddress]) -> bool:
    """
    Whether two addresses name the same endpoint, however written.
    """
    if isinstance(a, UNIXAddress) or isinstance(b, UNIXAddress):
        return (
            isinstance(a, UNIXAddress)
            and isinstance(b, UNIXAddress)
            and (os.fsencode(a.name or b"") == os.fsencode(b.name or b""))
        )
    if a is None or b is None:
        return a is b
    return packedIP(a) == packedIP(b)


class RoundTripTests(SynchronousTestCase):
    """
    What our encoders write, our parser reads back.
    """

    @FAST
    @given(ipAddresses, ipAddresses)
    def test_v1(self, source: IAddress, destination: IAddress) -> None:
        """
        Any pair of IP endpoints survives a v1 round trip.
        """
        header, rest = parseHeader(encodeV1(source, destination) + b"data")
        self.assertEqual(rest, b"data")
        self.assertFalse(header.local)
        self.assertTrue(sameEndpoint(header.source, source))
        self.assertTrue(sameEndpoint(header.destination, destination))

    @FAST
    @given(
        st.one_of(
            st.tuples(ipAddresses, ipAddresses), st.tuples(unixAddresses, unixAddresses)
        ),
        tlvLists,
        st.booleans(),
    )
    def test_v2(
        self, pair: Tuple[IAddress, IAddress], tlvs: List[Tuple[int, bytes]], crc: bool
    ) -> None:
        """
        Any pair of IP or unix endpoints, with any TLVs and with or without a
        checksum, survives a v2 round trip.
        """
        source, destination = pair
        data = encodeV2(source, destination, tlvs=tlvs, crc32c=crc)
        header, rest = parseHeader(data + b"data")
        self.assertEqual(rest, b"data")
        self.assertFalse(header.local)
        self.assertTrue(sameEndpoint(header.source, source))
        self.assertTrue(sameEndpoint(header.destination, destination))
        expected = list(tlvs) + ([(PP2_TYPE_CRC32C, data[-4:])] if crc else [])
        self.assertEqual(list(header.tlvs), expected)

    @FAST
    @given(tlvLists, st.booleans())
    def test_local(self, tlvs: List[Tuple[int, bytes]], crc: bool) -> None:
        """
        A LOCAL header with TLVs reads back as local with the same TLVs.
        """
        header, rest = parseHeader(encodeV2Local(tlvs, crc) + b"x")
        self.assertEqual((header.local, header.source, rest), (True, None, b"x"))
        self.assertEqual(list(header.tlvs[: len(tlvs)]), tlvs)

    @FAST
    @given(st.one_of(st.tuples(ipAddresses, ipAddresses)), tlvLists, st.booleans())
    def test_corruptChecksum(
        self, pair: Tuple[IAddress, IAddress], tlvs: List[Tuple[int, bytes]], flip: bool
    ) -> None:
        """
        Changing any one bit of a checksummed header after its signature is
        caught: by the CRC, or by the structure checks before it.
        """
        data = bytearray(encodeV2(pair[0], pair[1], tlvs=tlvs, crc32c=True))
        position = len(data) - 1 if flip else 16
        data[position] ^= 0x01
        try:
            header, rest = parseHeader(bytes(data))
        except InvalidProxyHeader:
            return
        self.fail(f"corrupted header accepted: {header!r} {rest!r}")


class SplitTests(SynchronousTestCase):
    """
    However the network splits a header, the result is the same.
    """

    @FAST
    @given(
        st.one_of(
            st.builds(encodeV1, ipAddresses, ipAddresses),
            st.builds(encodeV2, ipAddresses, ipAddresses, tlvLists, st.booleans()),
            st.builds(encodeV2, unixAddresses, unixAddresses),
            st.builds(encodeV2Local, tlvLists),
        ),
        st.binary(max_size=8),
    )
    def test_everySplitPoint(self, header: bytes, tail: bytes) -> None:
        """
        Split in two at every position, or fed byte by byte, a header gives
        the same header and rest as when fed whole.
        """
        data = header + tail
        whole = parseHeader(data)
        self.assertEqual(whole[1], tail)
        for split in range(len(data) + 1):
            self.assertEqual(feedPieces(data, [split]), whole)
        self.assertEqual(feedBytewise(data), whole)


def outcome(feed: object, data: bytes) -> object:
    """
    Run a parse and return its result or the type of error, so that two
    ways of feeding can be compared.
    """
    try:
        return feed(data)  # type: ignore[operator]
    except InvalidProxyHeader:
        return InvalidProxyHeader


VALID_SAMPLES = [line for _, line, _, _ in V1_VALID] + [h for _, h, _ in V2_VALID[:10]]


class FuzzTests(SynchronousTestCase):
    """
    Random and damaged input never breaks the parser: it may wait, accept
    or refuse with L{InvalidProxyHeader}, nothing else, and it agrees with
    itself however the bytes are split.
    """

    @settings(max_examples=300, deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=120),
            st.binary(max_size=120).map(lambda b: b"PROXY " + b),
            st.binary(max_size=120).map(lambda b: SIG + b),
            st.text("PROXYTCPUNKW46 0123456789abcdef:.%\r\n", max_size=110).map(
                lambda t: t.encode()
            ),
        )
    )
    def test_randomBytes(self, data: bytes) -> None:
        """
        Random bytes, bare or behind a PROXY prefix or the v2 signature,
        give the same outcome fed whole or byte by byte.
        """
        self.assertEqual(outcome(feedBytewise, data), outcome(wholeFeed, data))

    @settings(max_examples=300, deadline=None)
    @given(st.sampled_from(VALID_SAMPLES), st.data())
    def test_mutatedHeaders(self, header: bytes, data: st.DataObject) -> None:
        """
        Valid headers with bytes changed, inserted or removed give the same
        outcome fed whole or byte by byte.
        """
        mutated = bytearray(header)
        for _ in range(data.draw(st.integers(1, 4))):
            position = data.draw(st.integers(0, len(mutated)))
            action = data.draw(st.sampled_from(["set", "insert", "delete"]))
            byte = data.draw(st.integers(0, 255))
            if action == "insert":
                mutated.insert(position, byte)
            elif position < len(mutated):
                if action == "set":
                    mutated[position] = byte
                else:
                    del mutated[position]
        raw = bytes(mutated)
        self.assertEqual(outcome(feedBytewise, raw), outcome(wholeFeed, raw))


class TwistedOracleTests(SynchronousTestCase):
    """
    Twisted's own PROXY parsers, written independently, read what our
    encoders write the same way.
    """

    @FAST
    @given(ipAddresses, ipAddresses)
    def test_v1(self, source: IAddress, destination: IAddress) -> None:
        """
        L{V1Parser.parse} finds our v1 line's addresses and ports.
        """
        line = encodeV1(source, destination)
        info = V1Parser.parse(line[:-2])
        self.assertTrue(sameEndpoint(info.source, source))
        self.assertTrue(sameEndpoint(info.destination, destination))

    @FAST
    @given(
        st.one_of(
            st.tuples(ipAddresses, ipAddresses), st.tuples(unixAddresses, unixAddresses)
        ),
        tlvLists,
        st.booleans(),
    )
    def test_v2(
        self, pair: Tuple[IAddress, IAddress], tlvs: List[Tuple[int, bytes]], crc: bool
    ) -> None:
        """
        L{V2Parser.parse} finds our v2 header's addresses, TLVs or not.
        """
        source, destination = pair
        info = V2Parser.parse(encodeV2(source, destination, tlvs=tlvs, crc32c=crc))
        self.assertTrue(sameEndpoint(info.source, source))
        self.assertTrue(sameEndpoint(info.destination, destination))

    def test_localAndUnspec(self) -> None:
        """
        Twisted reads our LOCAL and PROXY-UNSPEC headers as "use the real
        endpoints" too.  (Not v1 C{UNKNOWN}: Twisted's V1Parser refuses the
        spec's short C{PROXY UNKNOWN\\r\\n} form outright.)
        """
        self.assertIsNone(V2Parser.parse(encodeV2Local(crc32c=True)).source)
        mixed = encodeV2(UNIXAddress("/a"), v4("1.2.3.4", 5))
        self.assertIsNone(V2Parser.parse(mixed).source)
