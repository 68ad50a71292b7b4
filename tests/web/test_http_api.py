"""The JSON API over HTTP (httpx against the ASGI app, an in-process node):
every operation, every error kind with its HTTP status and the ``--json``
error document, and the guards (session, CSRF, Host, Origin)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import WebNode, client_of
from troc.node.ops import cid, describe_error, eid, encode_invitation
from troc.protocol.entry import Campaign, CampaignClose, Request
from troc.web.adapter import HTTP_STATUS, OpFailed


class Api:
    def __init__(self, web: WebNode, csrf: str) -> None:
        self.web, self.csrf = web, csrf
        self.called: set[str] = set()

    async def __call__(self, op: str, params: dict[str, Any] | None = None, status: int = 200):
        self.called.add(op)
        r = await self.web.client.post(
            f"/api/op/{op}", json=params or {}, headers={"x-csrf-token": self.csrf}
        )
        assert r.status_code == status, (op, r.status_code, r.text)
        body = r.json()
        if status == 200:
            return body["result"]
        assert set(body["error"]) == {"kind", "reason", "message"}
        assert HTTP_STATUS[body["error"]["kind"]] == status
        return body["error"]


@pytest.fixture
async def api(web: WebNode) -> Api:
    return Api(web, await web.login())


async def test_every_operation_answers_over_http(web: WebNode, api: Api, tmp_path: Path) -> None:
    a, b = web.my_id, web.other_id
    assert (await api("whoami"))["member"] == a
    assert (await api("community.list"))["communities"][0]["name"] == "Test"
    assert (await api("community.show"))["credit_limit"] == 10
    assert (await api("community.policy"))["credit_limit"] == 10
    assert (await api("balances"))["balances"] == {a: 0, b: 0}
    offer = (await api("offer.add", {"title": "Bread", "price": "3", "tags": ["food"]}))["offer"]
    assert [o["title"] for o in (await api("offer.list", {"text": "bread"}))["offers"]] == ["Bread"]
    await api("offer.close", {"offer": offer})
    # a pays b, b declines (in b's own store, copied back as sync would), a reclaims.
    paid = (await api("pay", {"to": b, "amount": 4, "memo": "jam"}))["transfer"]
    with web.as_b() as b_local:
        b_local.decline(web.community, b_local.find_transfer(web.community, paid))
        web.from_b(b_local)
    assert (await api("pending"))["outgoing"][0]["status"] == "declined"
    assert (await api("reclaim", {"transfer": paid}))["transfer"] == paid
    # b pays a twice: a accepts one and declines the other.
    with web.as_b() as b_local:
        one = b_local.pay(web.community, web.me.public, 2)
        two = b_local.pay(web.community, web.me.public, 1)
        web.from_b(b_local)

    await api("accept", {"transfer": eid(one.id)})
    await api("decline", {"transfer": eid(two.id), "reason": "no thanks"})
    assert (await api("balance"))["balance"] == 2
    kinds = [e["kind"] for e in (await api("history", {"limit": 100}))["entries"]]
    assert kinds[:2] == ["decline", "accept"]
    assert (await api("forks"))["forks"] == []
    assert (await api("profile.set", {"place": "Hilltop"}))["profile"].startswith("e")
    assert (await api("profile.show"))["profile"]["place"] == "Hilltop"
    found = (await api("members", {"search": "hilltop", "balances": True}))["members"]
    assert [(m["name"], m["balance"]) for m in found] == [("Ana", 2)]
    assert (await api("statement"))["totals"]["closing"] == 2
    assert (await api("statement.bundle"))["bytes"] > 0
    # b asks a twice (issue 14): a pays one and refuses the other, and asks b.
    with web.as_b() as b_local:
        q1 = b_local.request(web.community, Request(to=web.me.public, amount=1))
        q2 = b_local.request(web.community, Request(to=web.me.public, amount=1))
        web.from_b(b_local)
    asked = [r["request"] for r in (await api("request.list"))["incoming"]]
    assert asked == [eid(q1.id), eid(q2.id)]
    assert (await api("request.pay", {"request": eid(q1.id)}))["request"] == eid(q1.id)
    assert (await api("request.refuse", {"request": eid(q2.id)}))["request"] == eid(q2.id)
    assert (await api("request.create", {"to": b, "amount": 1}))["text"].startswith("troc-req")
    # A payment that expired at once, taken back.
    gone = (await api("pay", {"to": b, "amount": 1, "expires_ms": 0}))["transfer"]
    assert (await api("take_back", {"transfer": gone}))["transfer"] == gone
    # Campaigns: a's own (its deadline passed: it closes, failed, with no pledge),
    # and b's, which a pledges to and b closes without it, so a withdraws.
    own = await api("campaign.create", {"title": "Oven", "goal": 5, "deadline_ms": 1})
    assert [c["title"] for c in (await api("campaign.list"))["campaigns"]] == ["Oven"]
    assert (await api("campaign.show", {"campaign": own["campaign"]}))["title"] == "Oven"
    assert (await api("campaign.close", {"campaign": own["campaign"]}))["state"] == "failed"
    with web.as_b() as b_local:
        shed = b_local.append(web.community, Campaign(title="Shed", goal=9, deadline_ms=2**50))
        web.from_b(b_local)
    await api("campaign.pledge", {"campaign": eid(shed.id), "amount": 1})
    with web.as_b() as b_local:
        b_local.append(web.community, CampaignClose(campaign=shed.ref, pledges=()))
        web.from_b(b_local)
    assert (await api("campaign.withdraw", {"campaign": eid(shed.id)}))["withdraw"]
    assert (await api("status"))["member"] == a
    assert (await api("peers"))["peers"] == []
    invitation = (await api("community.invite"))["invitation"]
    assert invitation.startswith("troc-invite:")
    assert (await api("vouch", {"member": b}))["vouch"].startswith("e")
    code = await api("invite.create", {"uses": 2})
    assert [c["uses"] for c in (await api("invite.list"))["codes"]] == [2]
    assert (await api("invite.revoke", {"code": code["code"]}))["state"] == "revoked"
    made = await api("community.create", {"name": "Other", "unit": "g", "credit_limit": 5})
    # Joining and following need a community this node is not in yet: b founds one.
    with web.as_b() as b_local:
        c2 = b_local.create_community("Garden", "g", 3)
        text = encode_invitation(b_local.community(c2).genesis, [])
        c3 = b_local.create_community("Orchard", "g", 3)
        text3 = encode_invitation(b_local.community(c3).genesis, [])
    assert (await api("community.join", {"invitation": text}))["community"] == cid(c2)
    assert (await api("community.follow", {"invitation": text3}))["community"] == cid(c3)
    assert made["community"] != cid(web.community)
    err = await api("finality", {"entry": paid}, status=404)
    assert err["kind"] == "not_found"
    err = await api("connect", {"addr": "/ip4/127.0.0.1/tcp/1/p2p/" + web.node.peer_id}, 502)
    assert err["kind"] == "network"
    listed = (await web.client.get("/api/ops")).json()["operations"]
    assert set(listed) == api.called, set(listed) ^ api.called


async def test_error_kinds_come_with_their_status_and_the_cli_document(
    web: WebNode, api: Api
) -> None:
    before = web.node.local.store.entry_count(web.community)
    refused = await api("pay", {"to": web.other_id, "amount": 11}, status=409)
    assert refused["kind"] == "refused"
    assert refused["reason"] == "overdraft"
    assert "credit limit" in refused["message"]
    assert web.node.local.store.entry_count(web.community) == before  # nothing signed
    usage = await api("pay", {"to": web.other_id, "amount": "3x"}, status=400)
    assert usage["kind"] == "usage"
    assert (await api("pay", {"to": web.other_id}, status=400))["message"] == (
        "missing parameter 'amount'"
    )
    assert (await api("no.such.op", {}, status=400))["kind"] == "usage"
    assert (await api("offer.close", {"offer": "e" + "a" * 57}, status=400))["kind"] == "usage"
    assert (await api("accept", {"transfer": "abcdefgh"}, status=400))["kind"] == "usage"
    assert (await api("balance", {"community": "Nowhere"}, status=404))["kind"] == "not_found"
    not_json = await web.client.post(
        "/api/op/balance", content=b"{nope", headers={"x-csrf-token": api.csrf}
    )
    assert not_json.status_code == 400
    assert not_json.json()["error"]["kind"] == "usage"
    assert web.node.local.store.entry_count(web.community) == before


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("usage", 400),
        ("not_found", 404),
        ("refused", 409),
        ("key", 423),
        ("store", 503),
        ("network", 502),
        ("error", 500),
        ("bug", 500),
        ("auth", 401),
        ("forbidden", 403),
    ],
)
def test_the_one_status_table(kind: str, status: int) -> None:
    assert OpFailed({"kind": kind, "message": ""}).status == status


def test_every_kind_describe_error_gives_has_a_status() -> None:
    from troc.errors import KeystoreError, NetworkError, RefusedError, StoreError, TrocError
    from troc.node.ops import NotFoundError

    for exc in (
        RefusedError("overdraft", "x"),
        NotFoundError("x"),
        KeystoreError("x"),
        StoreError("x"),
        NetworkError("x"),
        TrocError("x"),
        ValueError("x"),
    ):
        assert describe_error(exc)["kind"] in HTTP_STATUS


# -- the guards ------------------------------------------------------------------


async def test_no_session_no_csrf_foreign_host_or_origin_are_refused(web: WebNode) -> None:
    before = web.node.local.store.entry_count(web.community)
    pay = {"to": web.other_id, "amount": "1"}
    async with client_of(web.app) as stranger:
        r = await stranger.post("/api/op/pay", json=pay)
        assert r.status_code == 401
        assert r.json()["error"]["kind"] == "auth"
        r = await stranger.get("/")
        assert r.status_code == 401
        assert "troc web" in r.text
        r = await stranger.get("/events")
        assert r.status_code == 401
    csrf = await web.login()
    r = await web.client.post("/api/op/pay", json=pay)  # no CSRF header
    assert r.status_code == 403
    assert r.json()["error"]["kind"] == "forbidden"
    r = await web.client.post("/api/op/pay", json=pay, headers={"x-csrf-token": csrf + "x"})
    assert r.status_code == 403
    r = await web.client.post("/pay", data={**pay, "csrf": "wrong"})
    assert r.status_code == 403
    r = await web.client.post("/pay", data=pay)
    assert r.status_code == 403
    # DNS rebinding: the right cookie, but the page came from another name.
    r = await web.client.get("/", headers={"host": "evil.example:8787"})
    assert r.status_code == 403
    r = await web.client.post(
        "/api/op/pay", json=pay, headers={"x-csrf-token": csrf, "host": "evil.example"}
    )
    assert r.status_code == 403
    r = await web.client.post(
        "/pay", data={**pay, "csrf": csrf}, headers={"origin": "http://evil.example"}
    )
    assert r.status_code == 403
    assert web.node.local.store.entry_count(web.community) == before


async def test_a_login_token_works_once_and_makes_a_strict_cookie(web: WebNode) -> None:
    token = web.auth.mint_login()
    r = await web.client.get(f"/login?token={token}")
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    async with client_of(web.app) as other:
        again = await other.get(f"/login?token={token}")
        assert again.status_code == 401
        assert "set-cookie" not in again.headers


async def test_pages_have_a_strict_csp_and_no_inline_script(web: WebNode) -> None:
    await web.login()
    for path in (
        "/",
        "/pay",
        "/pending",
        "/history",
        "/offers",
        "/members",
        "/join",
        "/create",
        "/key",
        "/node",
        "/request",
        "/profile",
        f"/profile?member={web.other_id}",
    ):
        r = await web.client.get(path)
        assert r.status_code == 200, path
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "unsafe-inline" not in csp
        assert not re.search(r"<script(?![^>]*\bsrc=)", r.text), path
        assert not re.search(r"<[^>]+\son\w+=", r.text), path  # no inline handlers


async def test_an_address_is_a_safe_host_but_a_name_must_be_known(web: WebNode) -> None:
    await web.login()
    # A LAN address (a node bound to every interface): no DNS involved, no rebinding.
    assert (await web.client.get("/", headers={"host": "192.168.1.20:8787"})).status_code == 200
    assert (await web.client.get("/", headers={"host": "[fe80::1]:8787"})).status_code == 200
    assert (await web.client.get("/", headers={"host": "192.168.1.20:9999"})).status_code == 403
    assert (await web.client.get("/", headers={"host": "rebind.example:8787"})).status_code == 403
    assert (await web.client.get("/", headers={"host": "192.168.1.20"})).status_code == 403


async def test_the_language_switch_redirects_only_to_this_app(web: WebNode) -> None:
    for back, where in (
        ("/offers", "/offers"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example", "/"),
    ):
        r = await web.client.post("/lang", data={"lang": "fr", "back": back})
        assert r.status_code == 303
        assert r.headers["location"] == where
        assert "troc_lang=fr" in r.headers["set-cookie"]
    r = await web.client.post("/lang", data={"lang": "xx", "back": "/"})
    assert "set-cookie" not in r.headers
