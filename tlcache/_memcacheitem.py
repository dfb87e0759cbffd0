# -*- test-case-name: tests.unit.test_memcachecachestore -*-
"""
What L{tlcache.memcachestore.MemcacheCacheStore} keeps in memcached, as
bytes: the keys it uses, its items' versioned binary format, and the
generation tokens that invalidate them.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import struct
from typing import Any, Optional, Sequence, Tuple

import attrs

from tlcache.store import CacheEntry

# The item format. All integers big-endian:
#   b"tlc", format version (1 byte), created, freshUntil, staleUntil,
#   expiresAt (doubles); key (u32 length); etag (u16 length); header count
#   (u16), each name (u16 length) and value (u32 length); prefix generation
#   count (u16), each a u64; tag count (u16), each tag (u16 length, UTF-8)
#   and its generation (u64); body length (u32) and the body, which ends
#   the value exactly.
_MAGIC = b"tlc"
_FORMAT_VERSION = 1
_TIMES = struct.Struct("!dddd")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")


def _tagBytes(tag: str) -> bytes:
    return tag.encode("utf-8", "surrogatepass")


@attrs.frozen
class _StoredItem:
    """
    An item's value, decoded: the cache key it was written for, the entry,
    and the generation tokens current when it was written.
    """

    key: bytes
    entry: CacheEntry
    prefixGenerations: Tuple[int, ...]
    tagGenerations: Tuple[Tuple[str, int], ...]


class _ItemFormatError(Exception):
    """
    An item's value is not one this store can read; the message says why.
    """


class _OtherVersionError(_ItemFormatError):
    """
    An item in another version of the format.
    """


def _encodeHead(
    key: bytes,
    entry: CacheEntry,
    prefixGenerations: Sequence[int],
    tagGenerations: Sequence[Tuple[str, int]],
) -> bytes:
    """
    Everything of an item's value before the body.

    @raise ValueError: a field too long for the format.
    """
    try:
        parts = [
            _MAGIC,
            bytes([_FORMAT_VERSION]),
            _TIMES.pack(
                entry.created, entry.freshUntil, entry.staleUntil, entry.expiresAt
            ),
            _U32.pack(len(key)),
            key,
            _U16.pack(len(entry.etag)),
            entry.etag,
            _U16.pack(len(entry.headers)),
        ]
        for name, value in entry.headers:
            parts += [_U16.pack(len(name)), name, _U32.pack(len(value)), value]
        parts.append(_U16.pack(len(prefixGenerations)))
        parts += [_U64.pack(generation) for generation in prefixGenerations]
        parts.append(_U16.pack(len(tagGenerations)))
        for tag, generation in tagGenerations:
            raw = _tagBytes(tag)
            parts += [_U16.pack(len(raw)), raw, _U64.pack(generation)]
        parts.append(_U32.pack(len(entry.body)))
    except struct.error as e:
        raise ValueError(f"a field is too long for the item format: {e}") from e
    return b"".join(parts)


def _encodeItem(
    key: bytes,
    entry: CacheEntry,
    prefixGenerations: Sequence[int],
    tagGenerations: Sequence[Tuple[str, int]],
) -> bytes:
    """
    An item's whole value (see L{_decodeItem}).
    """
    return _encodeHead(key, entry, prefixGenerations, tagGenerations) + entry.body


class _Reader:
    """
    Reads a value front to back, never past its end.
    """

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes, offset: int) -> None:
        self.data = data
        self.offset = offset

    def take(self, length: int) -> bytes:
        end = self.offset + length
        if end > len(self.data):
            raise _ItemFormatError("truncated")
        chunk = self.data[self.offset : end]
        self.offset = end
        return chunk

    def unpack(self, layout: struct.Struct) -> Tuple[Any, ...]:
        if self.offset + layout.size > len(self.data):
            raise _ItemFormatError("truncated")
        values = layout.unpack_from(self.data, self.offset)
        self.offset += layout.size
        return values

    def number(self, layout: struct.Struct) -> int:
        value: int = self.unpack(layout)[0]
        return value


def _decodeItem(value: bytes) -> _StoredItem:
    """
    Read an item's value, checking every length against what is there.

    @raise _OtherVersionError: it is in another version of the format.
    @raise _ItemFormatError: anything else wrong with it.
    """
    if len(value) < len(_MAGIC) + 1 or not value.startswith(_MAGIC):
        raise _ItemFormatError("not a tlcache item")
    if value[len(_MAGIC)] != _FORMAT_VERSION:
        raise _OtherVersionError(f"format version {value[len(_MAGIC)]}")
    reader = _Reader(value, len(_MAGIC) + 1)
    created, freshUntil, staleUntil, expiresAt = reader.unpack(_TIMES)
    if any(math.isnan(t) for t in (created, freshUntil, staleUntil, expiresAt)):
        raise _ItemFormatError("a time is not a number")
    key = reader.take(reader.number(_U32))
    etag = reader.take(reader.number(_U16))
    headers = []
    for _ in range(reader.number(_U16)):
        name = reader.take(reader.number(_U16))
        headers.append((name, reader.take(reader.number(_U32))))
    prefixGenerations = tuple(reader.number(_U64) for _ in range(reader.number(_U16)))
    tagGenerations = []
    for _ in range(reader.number(_U16)):
        raw = reader.take(reader.number(_U16))
        try:
            tag = raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as e:
            raise _ItemFormatError("a tag is not UTF-8") from e
        tagGenerations.append((tag, reader.number(_U64)))
    tags = frozenset(tag for tag, _ in tagGenerations)
    if len(tags) != len(tagGenerations):
        raise _ItemFormatError("a tag appears twice")
    body = reader.take(reader.number(_U32))
    if reader.offset != len(value):
        raise _ItemFormatError("bytes after the body")
    try:
        entry = CacheEntry(
            body=body,
            headers=tuple(headers),
            created=created,
            etag=etag,
            tags=tags,
            freshUntil=freshUntil,
            staleUntil=staleUntil,
            expiresAt=expiresAt,
        )
    except (TypeError, ValueError) as e:
        raise _ItemFormatError(f"not a storable entry: {e}") from e
    return _StoredItem(key, entry, prefixGenerations, tuple(tagGenerations))


# memcached keys: the namespace, a kind, and a digest of what the key is for
# (cache keys may hold bytes memcached keys cannot, and be longer).


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).hexdigest().encode("ascii")


#: The most bytes the keys below add after the namespace.
_KEY_SUFFIX_LENGTH = len(b"e%d:" % (_FORMAT_VERSION,)) + 32


def _itemMemcacheKey(namespace: bytes, key: bytes) -> bytes:
    """
    Where the item for the cache key C{key} is kept.
    """
    # The format version is in the key, so processes running another
    # version during an upgrade do not overwrite each other's items.
    return namespace + b"e%d:" % (_FORMAT_VERSION,) + _digest(key)


def _prefixTokenKey(namespace: bytes, prefix: bytes) -> bytes:
    """
    Where the generation token of the boundary prefix C{prefix} is kept.
    """
    return namespace + b"p:" + _digest(prefix)


def _tagTokenKey(namespace: bytes, tag: str) -> bytes:
    """
    Where the generation token of the tag C{tag} is kept.
    """
    return namespace + b"t:" + _digest(_tagBytes(tag))


# Generation tokens: a random u64 as 16 hex digits.

_TOKEN = re.compile(rb"[0-9a-f]{16}")


def _generation(value: Optional[bytes]) -> Optional[int]:
    """
    A generation token as memcached holds it (16 hex digits), or C{None}
    when it is missing or unreadable: either way, no item matches it.
    """
    if value is None:
        return None
    value = value.strip()
    if _TOKEN.fullmatch(value) is None:
        return None
    return int(value, 16)


def _newGeneration() -> int:
    return secrets.randbits(64)


def _tokenBytes(generation: int) -> bytes:
    return b"%016x" % (generation,)
