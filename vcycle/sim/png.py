"""A line plot as PNG, drawn pixel by pixel and written with zlib: no drawing library, the same bytes each time."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from itertools import pairwise

WIDTH, HEIGHT, MARGIN = 800, 300, 20


def _rgb(colour: str) -> tuple[int, int, int]:
    value = colour.lstrip("#")
    return int(value[0:2], 16), int(value[2:4], 16), int(value[4:6], 16)


def plot(at: Sequence[float], lines: Sequence[Sequence[float]], colours: Sequence[str]) -> bytes:
    """``lines`` over ``at`` on a white canvas with a grey frame, each line in its colour."""
    pixels = bytearray(b"\xff" * (WIDTH * HEIGHT * 3))

    def put(x: int, y: int, rgb: tuple[int, int, int]) -> None:
        if 0 <= x < WIDTH and 0 <= y < HEIGHT:
            i = (y * WIDTH + x) * 3
            pixels[i:i + 3] = bytes(rgb)

    grey = (150, 150, 150)
    for x in range(MARGIN, WIDTH - MARGIN):
        put(x, MARGIN, grey)
        put(x, HEIGHT - MARGIN, grey)
    for y in range(MARGIN, HEIGHT - MARGIN + 1):
        put(MARGIN, y, grey)
        put(WIDTH - MARGIN, y, grey)
    end = max(at[-1], 1.0) if at else 1.0
    high = max([max(values, default=0.0) for values in lines] + [1.0])
    w, h = WIDTH - 2 * MARGIN, HEIGHT - 2 * MARGIN

    def where(t: float, v: float) -> tuple[int, int]:
        return round(MARGIN + w * t / end), round(HEIGHT - MARGIN - h * v / high)

    for n, values in enumerate(lines):
        rgb = _rgb(colours[n % len(colours)])
        points = [where(t, v) for t, v in zip(at, values, strict=False)]
        for (x0, y0), (x1, y1) in pairwise(points):
            steps = max(abs(x1 - x0), abs(y1 - y0), 1)
            for s in range(steps + 1):
                x, y = x0 + (x1 - x0) * s // steps, y0 + (y1 - y0) * s // steps
                put(x, y, rgb)
                put(x, y + 1, rgb)
    rows = b"".join(b"\x00" + bytes(pixels[y * WIDTH * 3:(y + 1) * WIDTH * 3]) for y in range(HEIGHT))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + \
        chunk(b"IEND", b"")
