"""Image size from the first bytes of an encoded file, and a cheap completeness check.

The DALI loader needs every image's size on the host (to compute its crop
window) and must keep files that would stop a DALI batch away from it: DALI
cannot skip one bad sample, its whole batch fails. Parsing the JPEG frame header
(or the PNG IHDR chunk) costs a few microseconds; anything this does not vouch
for (other formats, a JPEG without its end-of-image marker, an empty or foreign
file) is decoded by the reference PIL path instead, which skips it if it is
really broken. So a false alarm costs speed, never a sample.
"""
from __future__ import annotations

from typing import Optional

JPEG_SOI = b"\xff\xd8"
JPEG_EOI = b"\xff\xd9"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_IEND = b"IEND\xaeB`\x82"
#: Start-of-frame markers (baseline, extended, progressive, lossless, arithmetic); not DHT/JPG/DAC.
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: Markers without a length field.
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])
#: Padding some writers leave after the last marker.
_TRAILING = b"\x00\r\n \t"


def _jpeg_size(data: bytes) -> Optional[tuple[int, int]]:
    pos, end = 2, len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker in _SOF:
            if pos + 9 > end:
                return None
            return (data[pos + 5] << 8) | data[pos + 6], (data[pos + 7] << 8) | data[pos + 8]
        pos += 2 + ((data[pos + 2] << 8) | data[pos + 3])
    return None


def trusted_size(data: bytes) -> Optional[tuple[int, int]]:
    """``(height, width)`` of a complete JPEG or PNG, else None (let the reference decoder judge it)."""
    if data.startswith(JPEG_SOI):
        if not data.rstrip(_TRAILING).endswith(JPEG_EOI):
            return None  # truncated, or extra data after the image: not worth risking the batch
        size = _jpeg_size(data)
    elif data.startswith(PNG_SIGNATURE) and len(data) >= 24:
        if not data.rstrip(_TRAILING).endswith(PNG_IEND):
            return None
        size = int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")
    else:
        return None
    if size is None or size[0] <= 0 or size[1] <= 0:
        return None
    return size
