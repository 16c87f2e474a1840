"""The brand app's edit routes: PATCH campaigns and influencers, PATCH and DELETE fees, links by id.

Every change is audited with the acting key's id; other brands' ids answer 404; bad fields 422
naming them; a deleted fee stops counting in reports.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.registry.helpers import new_brand, new_campaign, new_influencer


def _audit(client: TestClient, h: dict[str, str]) -> list[dict[str, Any]]:
    r = client.get("/api/v1/audit", headers=h)
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _key_id(client: TestClient, h: dict[str, str]) -> str:
    return str(client.get("/api/v1/keys", headers=h).json()["items"][0]["id"])


def test_patch_campaign_changes_only_what_is_sent_and_is_audited(client: TestClient, world: dict[str, Any]) -> None:
    h, c = world["h"], world["campaign"]
    r = client.patch(f"/api/v1/campaigns/{c['id']}", headers=h, json={
        "name": "Autumn", "commission": {"type": "flat", "value": "2.50"}, "attribution_window_days": 7,
        "fallback_url": "https://shop.example/sale",
    })
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["name"] == "Autumn" and got["commission"] == {"type": "flat", "value": "2.5"}
    assert got["attribution_window_days"] == 7 and got["fallback_url"] == "https://shop.example/sale"
    assert got["allowed_domains"] == ["shop.example"] and got["archived"] is False
    assert client.get(f"/api/v1/campaigns/{c['id']}", headers=h).json() == got
    r = client.patch(f"/api/v1/campaigns/{c['id']}", headers=h, json={"archived": True, "fallback_url": ""})
    assert r.status_code == 200 and r.json()["archived"] is True and r.json()["fallback_url"] is None
    listed = client.get("/api/v1/campaigns", headers=h).json()["items"]
    assert [x["archived"] for x in listed] == [True]
    entry = _audit(client, h)[1]
    assert entry["action"] == "campaign.update" and entry["object_id"] == c["id"]
    assert entry["before"]["name"] == "Spring" and entry["after"]["name"] == "Autumn"
    assert entry["key_id"] == _key_id(client, h)


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({}, 422, "at least one"),
    ({"name": ""}, 422, "name"),
    ({"name": "x", "colour": "red"}, 422, "colour"),
    ({"fallback_url": "javascript:alert(1)"}, 422, "fallback_url"),
    ({"fallback_url": "ftp://x.example/"}, 422, "fallback_url"),
    ({"commission": {"type": "percent", "value": "101"}}, 422, "out of range"),
    ({"attribution_window_days": 0}, 422, "attribution_window_days"),
])
def test_patch_campaign_refuses_bad_fields(client: TestClient, world: dict[str, Any], body: dict[str, Any],
                                           status: int, needle: str) -> None:
    r = client.patch(f"/api/v1/campaigns/{world['campaign']['id']}", headers=world["h"], json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]["message"]


def test_create_campaign_takes_a_fallback_url(client: TestClient, world: dict[str, Any]) -> None:
    c = new_campaign(client, world["brand"], fallback_url="https://other.example/x")
    assert c["fallback_url"] == "https://other.example/x"
    r = client.post("/api/v1/campaigns", headers=world["h"], json={
        "name": "x", "commission": {"type": "percent", "value": "5"}, "fallback_url": "not a url"})
    assert r.status_code == 422 and "fallback_url" in r.json()["error"]["message"]


def test_other_brands_ids_answer_404(client: TestClient, world: dict[str, Any]) -> None:
    other = new_brand(client, name="Other")
    oh = other["headers"]
    c, i = world["campaign"], world["influencer"]
    assert client.patch(f"/api/v1/campaigns/{c['id']}", headers=oh, json={"name": "x"}).status_code == 404
    assert client.patch(f"/api/v1/influencers/{i['id']}", headers=oh, json={"name": "x"}).status_code == 404
    fee = client.post("/api/v1/fees", headers=world["h"], json={
        "campaign_id": c["id"], "influencer_id": i["id"], "amount": "10"}).json()
    assert client.patch(f"/api/v1/fees/{fee['id']}", headers=oh, json={"note": "x"}).status_code == 404
    assert client.delete(f"/api/v1/fees/{fee['id']}", headers=oh).status_code == 404
    link = client.post("/api/v1/links", headers=world["h"], json={
        "campaign_id": c["id"], "influencer_id": i["id"], "destination_url": "https://shop.example/"}).json()
    assert client.get(f"/api/v1/links/by-id/{link['id']}", headers=oh).status_code == 404
    for bad in ("0", "-1", "abc", "99999999999999999999999"):
        assert client.get(f"/api/v1/links/by-id/{bad}", headers=world["h"]).status_code == 404


def test_patch_influencer_and_archive(client: TestClient, world: dict[str, Any]) -> None:
    h, i = world["h"], world["influencer"]
    r = client.patch(f"/api/v1/influencers/{i['id']}", headers=h, json={"name": "Anna B", "handle": "@annab"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Anna B" and r.json()["handle"] == "@annab" and r.json()["archived"] is False
    r = client.patch(f"/api/v1/influencers/{i['id']}", headers=h, json={"archived": True})
    assert r.json()["archived"] is True and r.json()["name"] == "Anna B"
    assert client.get(f"/api/v1/influencers/{i['id']}", headers=h).json()["archived"] is True
    bad = client.patch(f"/api/v1/influencers/{i['id']}", headers=h, json={"email": "a@b.example"})
    assert bad.status_code == 422 and "email" in bad.json()["error"]["message"]
    actions = [e["action"] for e in _audit(client, h)[:2]]
    assert actions == ["influencer.update", "influencer.update"]


def test_fee_edit_and_delete_are_audited_and_reports_follow(client: TestClient, world: dict[str, Any]) -> None:
    h, c, i = world["h"], world["campaign"], world["influencer"]
    today = datetime.now(UTC).date().isoformat()
    fee = client.post("/api/v1/fees", headers=h, json={
        "campaign_id": c["id"], "influencer_id": i["id"], "amount": "100", "note": "story"}).json()

    def fees_total() -> str:
        r = client.get(f"/api/v1/reports?from={today}&to={today}&group_by=influencer", headers=h)
        assert r.status_code == 200, r.text
        return str(r.json()["totals"]["fees"])

    assert fees_total() == "100.00"
    r = client.patch(f"/api/v1/fees/{fee['id']}", headers=h, json={"amount": "120.50", "note": "two stories"})
    assert r.status_code == 200, r.text
    assert r.json()["amount"] == "120.50" and r.json()["note"] == "two stories" and r.json()["id"] == fee["id"]
    assert fees_total() == "120.50"
    bad = client.patch(f"/api/v1/fees/{fee['id']}", headers=h, json={"amount": "1.234"})
    assert bad.status_code == 422 and "amount" in bad.json()["error"]["message"]
    eur = client.patch(f"/api/v1/fees/{fee['id']}", headers=h, json={"currency": "EUR"})
    assert eur.status_code == 422 and eur.json()["error"]["code"] == "missing_fx_rate"
    assert client.put("/api/v1/fx-rates/EUR", headers=h, json={"rate": "1.10"}).status_code == 200
    eur = client.patch(f"/api/v1/fees/{fee['id']}", headers=h, json={"currency": "EUR", "amount": "100"})
    assert eur.status_code == 200 and eur.json()["amount"] == "110.00" and eur.json()["original_currency"] == "EUR"

    assert client.delete(f"/api/v1/fees/{fee['id']}", headers=h).status_code == 204
    assert client.delete(f"/api/v1/fees/{fee['id']}", headers=h).status_code == 404
    assert client.patch(f"/api/v1/fees/{fee['id']}", headers=h, json={"note": "x"}).status_code == 404
    assert client.get("/api/v1/fees", headers=h).json()["items"] == []
    assert fees_total() == "0.00"
    entries = _audit(client, h)
    assert [e["action"] for e in entries[:3]] == ["fee.delete", "fee.update", "fx_rate.set"]
    assert entries[0]["before"]["amount"] == "110.00" and entries[0]["after"] is None


def test_links_by_id_and_codes_are_case_sensitive(client: TestClient, world: dict[str, Any]) -> None:
    h, c, i = world["h"], world["campaign"], world["influencer"]
    body = {"campaign_id": c["id"], "influencer_id": i["id"], "destination_url": "https://shop.example/"}
    link = client.post("/api/v1/links", headers=h, json=body).json()
    by_id = client.get(f"/api/v1/links/by-id/{link['id']}", headers=h)
    assert by_id.status_code == 200 and by_id.json() == client.get(f"/api/v1/links/{link['code']}", headers=h).json()
    digits = client.post("/api/v1/links", headers=h, json={**body, "code": "12345"}).json()
    assert client.get("/api/v1/links/12345", headers=h).json()["id"] == digits["id"]
    upper = client.post("/api/v1/links", headers=h, json={**body, "code": "Spring"}).json()
    lower = client.post("/api/v1/links", headers=h, json={**body, "code": "spring"})
    assert lower.status_code == 201, lower.text
    assert lower.json()["id"] != upper["id"]
    assert client.get("/api/v1/links/SPRING", headers=h).status_code == 404


def test_a_read_key_cannot_edit(client: TestClient, world: dict[str, Any]) -> None:
    key = client.post("/api/v1/keys", headers=world["h"], json={"name": "ro", "scope": "read"}).json()["key"]
    rh = {"Authorization": f"Bearer {key}"}
    r = client.patch(f"/api/v1/campaigns/{world['campaign']['id']}", headers=rh, json={"name": "x"})
    assert r.status_code == 403
    assert client.patch(f"/api/v1/influencers/{world['influencer']['id']}", headers=rh,
                        json={"name": "x"}).status_code == 403


def test_new_influencer_helper_still_answers_archived(client: TestClient, world: dict[str, Any]) -> None:
    assert new_influencer(client, world["brand"])["archived"] is False
