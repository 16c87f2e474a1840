"""docs/STORES.md says what the code does: webhook URLs, signature headers, topics, the carrier's tag."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from starlette.routing import BaseRoute

from tracker.conversions import integrations
from tracker.conversions.connectors import shopify, stripe_, woocommerce
from tracker.web import carrier

DOC = (Path(__file__).resolve().parent.parent.parent / "docs" / "STORES.md").read_text(encoding="utf-8")


def _table() -> dict[str, dict[str, object]]:
    """The platform table: platform -> url, header, topics."""
    rows = re.findall(r"^\| (shopify|woocommerce|stripe) \| `([^`]+)` \| `([^`]+)` \| (.+) \|$", DOC, flags=re.M)
    return {p: {"url": url, "header": header, "topics": re.findall(r"`([^`]+)`", topics)}
            for p, url, header, topics in rows}


def _paths(routes: list[BaseRoute]) -> set[str]:
    return {getattr(r, "path", "") for r in routes}


CODE = {
    "shopify": (shopify.HMAC_HEADER, list(shopify.TOPICS)),
    "woocommerce": (woocommerce.SIGNATURE_HEADER, list(woocommerce.TOPICS)),
    "stripe": (stripe_.SIGNATURE_HEADER, list(stripe_.TYPES)),
}


@pytest.mark.parametrize("platform", sorted(CODE))
def test_the_platform_table_matches_the_code(platform: str) -> None:
    row = _table()[platform]
    assert row["url"] in _paths(integrations.routes())
    assert row["url"] == f"/api/v1/integrations/{platform}/{{store_id}}"
    header, topics = CODE[platform]
    assert row["header"] == header
    assert row["topics"] == topics


@pytest.mark.parametrize("platform", sorted(CODE))
def test_every_topic_is_named_in_the_platform_steps(platform: str) -> None:
    section = DOC.split(f"## {dict(shopify='Shopify', woocommerce='WooCommerce', stripe='Stripe')[platform]}\n")[1]
    section = section.split("\n## ")[0]
    for topic in CODE[platform][1]:
        assert f"`{topic}`" in section, topic


def test_the_headers_that_name_a_delivery_are_the_ones_read() -> None:
    for header in (shopify.WEBHOOK_ID_HEADER, woocommerce.DELIVERY_ID_HEADER):
        assert f"`{header}`" in DOC, header


def test_the_script_tag_and_the_cookie_recipes() -> None:
    tags = set(re.findall(r'<script src="https://track\.example\.com(/[^"]+)" data-param="([^"]+)" async>', DOC))
    assert tags == {(carrier.ROUTE.path, "click_id")}
    script = (carrier.STATIC / "t.js").read_text(encoding="utf-8")
    cookie = re.search(r"var NAME = '([^']+)'", script)
    assert cookie is not None and cookie.group(1) == "trk_click_id"
    for lang in ("nginx", "js", "php"):
        blocks = re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)
        assert any("trk_click_id" in b and ("7776000" in b or "90 * 86400" in b) for b in blocks), lang
    assert woocommerce.CLICK_ID_META[0] in DOC and shopify.CLICK_ID_ATTRIBUTE in DOC
