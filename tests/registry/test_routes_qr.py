"""QR codes of links: the image encodes the short URL, caches, and is the brand's own."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import pytest
import segno
from starlette.testclient import TestClient

from tests.registry.helpers import link_body, new_brand
from tracker.web.qr import BORDER


def png_modules(png: bytes) -> list[list[bool]]:
    """The pixels of a 1-bit grayscale PNG as segno writes it (True: dark)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat, width = 8, b"", 0
    while i < len(png):
        (n,) = struct.unpack(">I", png[i:i + 4])
        kind, data = png[i + 4:i + 8], png[i + 8:i + 8 + n]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", data[:10])
            assert (depth, color) == (1, 0) and width == height
        elif kind == b"IDAT":
            idat += data
        i += 12 + n
    raw, stride = zlib.decompress(idat), (width + 7) // 8 + 1
    rows, prev = [], bytes(stride - 1)
    for y in range(width):
        kind, line = raw[y * stride], bytearray(raw[y * stride + 1:(y + 1) * stride])
        for x in range(len(line)):  # the filters segno uses: none, Sub, Up (one byte per pixel group)
            if kind == 1 and x:
                line[x] = (line[x] + line[x - 1]) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + prev[x]) & 0xFF
        assert kind in (0, 1, 2)
        prev = bytes(line)
        rows.append([not (line[x // 8] >> (7 - x % 8)) & 1 for x in range(width)])
    return rows


def matrix(url: str) -> list[list[bool]]:
    return [[bool(v) for v in row] for row in segno.make(url, error="m", micro=False).matrix]


@pytest.fixture
def link(client: TestClient, world: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/api/v1/links", json=link_body(world), headers=world["h"])
    assert r.status_code == 201
    out: dict[str, Any] = r.json()
    return out


@pytest.mark.parametrize("size", [64, 300, 2048])
def test_png_encodes_the_short_url(client: TestClient, world: dict[str, Any], link: dict[str, Any],
                                   size: int) -> None:
    r = client.get(f"/api/v1/links/{link['code']}/qr?format=png&size={size}", headers=world["h"])
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    pixels = png_modules(r.content)
    expected = matrix(link["short_url"])
    n = len(expected) + 2 * BORDER
    scale = len(pixels) // n
    assert len(pixels) == n * scale and scale == max(1, size // n)
    modules = [[pixels[(y + BORDER) * scale][(x + BORDER) * scale] for x in range(len(expected))]
               for y in range(len(expected))]
    assert modules == expected


def test_svg_and_caching(client: TestClient, world: dict[str, Any], link: dict[str, Any]) -> None:
    path = f"/api/v1/links/{link['code']}/qr"
    r = client.get(path, headers=world["h"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.startswith("<svg") and f"<title>{link['short_url']}</title>" in r.text
    assert r.headers["cache-control"] == "private, max-age=86400"
    etag = r.headers["etag"]
    again = client.get(path, headers={**world["h"], "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    assert client.get(path + "?format=png", headers={**world["h"], "If-None-Match": etag}).status_code == 200


@pytest.mark.parametrize("query", ["?format=gif", "?size=10", "?size=5000", "?size=big", "?colour=red"])
def test_bad_queries(client: TestClient, world: dict[str, Any], link: dict[str, Any], query: str) -> None:
    assert client.get(f"/api/v1/links/{link['code']}/qr{query}", headers=world["h"]).status_code == 422


def test_unknown_and_other_brands_links(client: TestClient, world: dict[str, Any], link: dict[str, Any]) -> None:
    assert client.get("/api/v1/links/nope123/qr", headers=world["h"]).status_code == 404
    other = new_brand(client, name="Other")
    assert client.get(f"/api/v1/links/{link['code']}/qr", headers=other["headers"]).status_code == 404
    assert client.get(f"/api/v1/links/{link['code']}/qr").status_code == 401
