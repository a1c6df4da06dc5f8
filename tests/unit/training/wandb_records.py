"""The records of an offline W&B run file (`run-<id>.wandb`), for tests: wandb 0.31 ships no reader.

The file is a 7-byte header (":W&B", 0xBEE1, version 0) then LevelDB's log format: 32 KiB blocks of
records, each a 7-byte header (CRC32C, little-endian length, type: 1 full, 2 first, 3 middle, 4 last)
and its payload; a payload is one serialized `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

HEADER = b":W&B\xe1\xbe\x00"
BLOCK = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> Iterator[bytes]:
    """Each record's bytes, chunks joined."""
    data = path.read_bytes()
    if not data.startswith(HEADER):
        raise ValueError(f"{path}: not a W&B run file")
    position, pending = len(HEADER), b""
    while position + 7 <= len(data):
        room = BLOCK - position % BLOCK
        if room < 7:  # a block's tail too short for a header is padding
            position += room
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, position)
        if kind == 0:
            break
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
