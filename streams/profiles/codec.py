"""How the profile store keeps its documents: compact bytes instead of JSONB.

A profile document (``logic.new_profile``'s shape, without its ``id``) and a stored event
(``FoldEvent.to_json`` without ``m`` and ``t``, which are columns of their own) are kept
as one version byte followed by their orjson text compressed against a preset dictionary
of the fragments every document repeats: the keys, the event types, sources, channels,
identifier types, a timestamp.

- Version 2 (written now): a Zstandard frame without its magic number or checksum (the
  column is the frame), level 3, with a 16 KiB dictionary trained on the demo's
  simulated traffic (``dictionary-2.zstd``, written by ``scripts/train_dictionary.py``;
  never trained on the bench's events). On the bench's documents a profile of 870 bytes
  of JSON takes about 185 and an event of 140 about 60; on the demo's richer ones 1,300
  bytes take about 260 and 160 about 30. Compressing costs about 2.6 µs per profile and
  1 per event, decompressing under 1.
- Version 1 (rows written before): raw deflate with a 4 KiB window and the hand-written
  dictionary below: about 190 and 50 bytes on the bench, 12.9 and 4.9 µs to compress
  and about 5 to inflate (docs/profiles.md, "The store's cost, measured").

The format is frozen per version: rows of version 1 decode with version 1's codec for
ever, and a new codec or dictionary is a new version byte, so no stored row ever needs
rewriting.

Pure: no I/O. Decoding raises ValueError for bytes that are not a document of a known
version.
"""

from __future__ import annotations

import threading
import zlib
from pathlib import Path
from typing import Any

import orjson
import zstandard

from streams.profiles.models import FoldEvent

# Version 1's dictionary (deflate). Never edit it: stored rows depend on every byte. Deflate finds
# matches nearer the end more cheaply, so the most common fragments come last.
_DICTIONARY_1 = (
    b'"session_id:cookie:external:facebook:instagram:twitter:linkedin:phone:+device_id:'
    b'"Order Completed","Product Viewed","Product Added","Product Clicked","Cart Viewed",'
    b'"Post Liked","Post Shared","Comment Posted","Followed","Mentioned","Signed Up",'
    b'"name":"first_name":"last_name":"firstName":"lastName":"locale":"language":'
    b'"country":"city":"email":"@gmail.com","@example.com","phone":"plan":"pro","free",'
    b'"newsletter":true,"marketing":false,"sms":"push":"email":true,'
    b'"channel:facebook":["channel:instagram":["channel:twitter":["channel:linkedin":["'
    b'"type":"mobile","manufacturer":"Apple","model":"iPhone","os":"iOS","Android",'
    b'"browser":"Chrome","Safari","Firefox","first":"last":"info":[{'
    b'"devices":{},"groups":{},"consent":{},"preferences":{},"traits":{},"timezone":null,'
    b'"notes":[],"merges":0,"created":["2026-01-01T00:00:00.000000Z","'
    b'"identifiers":["anonymous_id:'
    b'"email:'
    b'"user_id:'
    b'"hours":{"local":{},"utc":{}},"recent":{},"affinity":{"category":{},"item":{}},'
    b'"counts":{"total":1,"type":{"track":1,"page":1,"screen":1,"identify":1,"alias":1,'
    b'"group":1},"event":{},"source":{"web":1,"mobile":1,"smartwatch":1,"social":1,'
    b'"unknown":1},"channel":{}},"seen":{"all":["2026-01-01T00:00:00.000000Z",'
    b'"2026-01-01T00:00:00.000000Z"],"source:web":["","source:mobile":["",'
    b'"source:smartwatch":["","source:social":["'
    b'"tz":"Europe/London","America/New_York","Europe/Paris","Asia/Tokyo","Europe/Berlin",'
    b'"y":"track","y":"page","y":"screen","y":"identify","y":"alias","y":"group",'
    b'"s":"web","s":"mobile","s":"smartwatch","s":"social","c":"facebook","c":"instagram",'
    b'{"i":["anonymous_id:","user_id:","email:"],"e":"","g":"","p":"sku-","tr":{"pr":{'
    b'"co":{"d":{"gi":"gt":{'
)
_WBITS = -12  # version 1: raw deflate (no header or checksum), 4 KiB window
_VERSION = 2
_PREFIX = bytes([_VERSION])
# Version 2's level: 3 compresses a profile in 4.5 µs to 220 bytes; 6 to 190 in 6.9 and 9
# no smaller in 9.2 (the bench's documents). Any level decompresses with the same
# dictionary, so the level is the writer's choice only.
_ZSTD_LEVEL = 3
# Decompressed documents are bounded well below this (a profile's lists are capped).
_MAX_DOCUMENT = 64 * 1024 * 1024


_DICTIONARY_2 = (Path(__file__).parent / "dictionary-2.zstd").read_bytes()


class _Codecs(threading.local):
    """Version 2's compressor and decompressor, one of each per thread (zstandard's are
    not thread-safe), primed with the dictionary once."""

    def __init__(self) -> None:
        dictionary = zstandard.ZstdCompressionDict(_DICTIONARY_2)
        dictionary.precompute_compress(level=_ZSTD_LEVEL)
        params = zstandard.ZstdCompressionParameters.from_level(
            _ZSTD_LEVEL, format=zstandard.FORMAT_ZSTD1_MAGICLESS, write_checksum=0,
            write_content_size=1, write_dict_id=0)
        self.compress = zstandard.ZstdCompressor(
            dict_data=dictionary, compression_params=params).compress
        self.decompress = zstandard.ZstdDecompressor(
            dict_data=dictionary, format=zstandard.FORMAT_ZSTD1_MAGICLESS).decompress


_codecs = _Codecs()
# Version 1's decompressor state, primed with its dictionary once; each row starts from
# a copy (cheaper than priming a fresh one).
_INFLATE_1 = zlib.decompressobj(_WBITS, _DICTIONARY_1)


def pack(doc: Any) -> bytes:
    """Any JSON-able value as stored bytes (the current version)."""
    return _PREFIX + _codecs.compress(orjson.dumps(doc))


def unpack(data: bytes | memoryview) -> Any:
    """The value ``pack`` stored (any version); raises ValueError for bytes of no known
    version or that do not decompress to JSON."""
    if not data:
        raise ValueError("empty stored document")
    version = data[0]
    try:
        if version == 2:
            text = _codecs.decompress(memoryview(data)[1:], max_output_size=_MAX_DOCUMENT)
        elif version == 1:
            d = _INFLATE_1.copy()
            text = d.decompress(memoryview(data)[1:]) + d.flush()
        else:
            raise ValueError(f"stored document of unknown version {version}")
        return orjson.loads(text)
    except (zstandard.ZstdError, zlib.error, orjson.JSONDecodeError) as exc:
        raise ValueError(f"stored document does not decode: {exc}") from exc


def pack_v1(doc: Any) -> bytes:
    """``doc`` in version 1's format (deflate), as rows written before version 2 hold
    it: for tests of reading old rows. Level 3, as those rows were written."""
    c = zlib.compressobj(3, zlib.DEFLATED, _WBITS, 5, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY_1)
    return bytes([1]) + c.compress(orjson.dumps(doc)) + c.flush()


def pack_profile(doc: dict) -> bytes:
    """A profile document without its ``id`` (the row's key) as stored bytes."""
    doc = doc.copy()
    del doc["id"]
    return pack(doc)


def unpack_profile(profile_id: object, data: bytes) -> dict:
    """The document of profile ``profile_id`` from its stored bytes."""
    return {"id": str(profile_id), **unpack(data)}


def pack_event(event: FoldEvent) -> bytes:
    """An event's compact form without message id and time (columns of their own)."""
    doc = event.to_json()
    del doc["m"], doc["t"]
    return pack(doc)


def event_doc(message_id: str, time: str, data: bytes) -> dict:
    """A stored event in ``FoldEvent.to_json`` form."""
    doc = unpack(data)
    doc["m"], doc["t"] = message_id, time
    return doc


def unpack_event(message_id: str, time: str, data: bytes) -> FoldEvent:
    """A stored event as the ``FoldEvent`` it was."""
    return FoldEvent.from_json(event_doc(message_id, time, data))
