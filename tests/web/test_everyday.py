"""The everyday-exchange screens (issue 14 in the web app): payment requests
with their text and QR code, take-backs and late accepts, the profile form
and the members directory, statements to download. In-process: httpx over
the ASGI app of a real node on a real SQLite store."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
import time
import xml.etree.ElementTree as ET

from tests.web.conftest import WebNode
from troc.node.notices import PROFILE_IS_PUBLIC
from troc.node.operations import run_offline
from troc.node.ops import eid
from troc.protocol.entry import Request
from troc.protocol.request_text import decode_request_text
from troc.protocol.statement import verify_bundle
from troc.web import i18n

FR = {"accept-language": "fr-FR,fr;q=0.9"}


def count(web: WebNode) -> int:
    return int(web.node.local.store.entry_count(web.community))


async def api(web: WebNode, csrf: str, op: str, params: dict[str, object]) -> dict[str, object]:
    r = await web.client.post(f"/api/op/{op}", json=params, headers={"x-csrf-token": csrf})
    assert r.status_code == 200, r.text
    return dict(r.json()["result"])


async def test_a_request_made_in_the_app_shows_its_text_and_qr_and_is_paid_by_the_text(
    web: WebNode,
) -> None:
    csrf = await web.login()
    r = await web.client.post(
        "/request",
        data={"csrf": csrf, "to": web.other_id, "amount": "3", "memo": "repair", "expires": ""},
    )
    assert r.status_code == 303, r.text
    where = r.headers["location"]
    request_id = where.removeprefix("/request/")
    page = await web.client.get(where)
    assert page.status_code == 200
    text = re.search(r'id="request-out"[^>]*>(troc-request:[a-z0-9]+)<', page.text).group(1)
    assert f'src="/request/{request_id}/qr.svg"' in page.text
    asked = decode_request_text(text)
    assert eid(asked.id) == request_id
    assert isinstance(asked.body, Request)
    assert (asked.body.to, asked.body.amount, asked.body.memo) == (web.other.public, 3, "repair")
    qr = await web.client.get(f"/request/{request_id}/qr.svg")
    assert qr.headers["content-type"].startswith("image/svg+xml")
    svg = ET.fromstring(qr.content)
    assert svg.tag.endswith("svg")
    assert svg.find("{http://www.w3.org/2000/svg}path") is not None
    assert (await web.client.get("/request/e" + "0" * 57 + "/qr.svg")).status_code == 404
    pending = await web.client.get("/pending")
    assert f'data-request="{request_id}"' in pending.text  # my open request
    # b's node pays from the text alone: it never held the request.
    with web.as_b() as b_local:
        paid = run_offline(b_local, "request.pay", {"request": text})
        web.from_b(b_local)
    assert paid["request"] == request_id
    page = await web.client.get(where)
    assert "paid" in re.search(r'id="request-state">([^<]+)<', page.text).group(1)
    assert "qr.svg" not in page.text  # nothing left to scan


async def test_requests_to_me_are_paid_or_refused_from_pending_once(web: WebNode) -> None:
    csrf = await web.login()
    with web.as_b() as b_local:
        q1 = b_local.request(web.community, Request(to=web.me.public, amount=2, memo="eggs"))
        q2 = b_local.request(web.community, Request(to=web.me.public, amount=1))
        web.from_b(b_local)
    home = await web.client.get("/")
    assert "Pay or refuse a request for 2 h" in home.text  # needs your action
    page = await web.client.get("/pending")
    for q in (q1, q2):
        assert f'data-request="{eid(q.id)}"' in page.text
    assert 'action="/request/pay"' in page.text
    assert 'action="/request/refuse"' in page.text
    r = await web.client.post("/request/pay", data={"csrf": csrf, "request": eid(q1.id)})
    assert (r.status_code, r.headers["location"]) == (303, "/pending")
    r = await web.client.post("/request/refuse", data={"csrf": csrf, "request": eid(q2.id)})
    assert r.status_code == 303
    before = count(web)
    # Paying it again, by its pasted text: refused in words, nothing signed.
    with web.as_b() as b_local:
        text = run_offline(b_local, "request.list", {})["outgoing"][0]["text"]
    r = await web.client.post("/request/pay", data={"csrf": csrf, "request": text}, headers=FR)
    assert r.status_code == 409
    assert 'data-reason="already_paid"' in r.text
    assert "cette demande a déjà été payée" in r.text
    assert text in r.text  # the form keeps what was pasted
    r = await web.client.post("/request/refuse", data={"csrf": csrf, "request": eid(q2.id)})
    assert r.status_code == 409
    assert 'data-reason="already_refused"' in r.text
    r = await web.client.post("/request/pay", data={"csrf": csrf, "request": "troc-request:zz"})
    assert r.status_code == 400
    assert 'data-kind="usage"' in r.text
    r = await web.client.post("/request/pay", data={"request": eid(q1.id)})  # no CSRF
    assert r.status_code == 403
    assert count(web) == before
    assert (await api(web, csrf, "balance", {}))["balance"] == -2


async def test_a_refused_request_form_keeps_what_was_typed_and_signs_nothing(
    web: WebNode,
) -> None:
    csrf = await web.login()
    before = count(web)
    form = {"csrf": csrf, "to": web.my_id, "amount": "2", "memo": "myself"}
    r = await web.client.post("/request", data=form, headers=FR)
    assert r.status_code == 409
    assert 'data-reason="self_payment"' in r.text
    assert 'value="myself"' in r.text
    r = await web.client.post("/request", data={**form, "to": web.other_id, "amount": "2x"})
    assert r.status_code == 400
    r = await web.client.post(
        "/request", data={**form, "to": web.other_id, "expires": "next tuesday"}
    )
    assert r.status_code == 400
    assert "YYYY-MM-DD" in r.text
    assert count(web) == before
    # A day as the date field sends it: the request expires at its end (UTC).
    r = await web.client.post(
        "/request", data={**form, "to": web.other_id, "expires": "2999-01-31"}
    )
    assert r.status_code == 303
    listed = await api(web, csrf, "request.list", {})
    end = dt.datetime(2999, 1, 31, 23, 59, 59, tzinfo=dt.UTC)
    assert listed["outgoing"][0]["expires_ms"] == int(end.timestamp() * 1000)


async def test_expired_payments_are_taken_back_or_accepted_late_with_the_race_explained(
    web: WebNode,
) -> None:
    csrf = await web.login()
    mine = str(
        (await api(web, csrf, "pay", {"to": web.other_id, "amount": 4, "expires_ms": 0}))[
            "transfer"
        ]
    )
    with web.as_b() as b_local:
        theirs = b_local.pay(web.community, web.me.public, 3, expires_ms=0)
        web.from_b(b_local)
    en, fr = i18n.catalogue("en"), i18n.catalogue("fr")
    assert "Take back 4 h (expired without an answer)" in (await web.client.get("/")).text
    page = await web.client.get("/pending", headers=FR)
    assert fr["pending.race_out"] in page.text.replace("&#39;", "'")
    assert fr["pending.race_in"] in page.text.replace("&#39;", "'")
    assert 'value="take_back"' in page.text
    assert 'value="accept_late"' in page.text
    # Accepting an expired payment without saying so is refused, in words.
    before = count(web)
    r = await web.client.post(
        "/answer", data={"csrf": csrf, "verb": "accept", "transfer": eid(theirs.id)}
    )
    assert r.status_code == 409
    assert 'data-reason="expired"' in r.text
    assert en["reason.expired"] in r.text
    assert count(web) == before
    r = await web.client.post(
        "/answer", data={"csrf": csrf, "verb": "accept_late", "transfer": eid(theirs.id)}
    )
    assert r.status_code == 303
    r = await web.client.post("/answer", data={"csrf": csrf, "verb": "take_back", "transfer": mine})
    assert r.status_code == 303
    assert (await web.client.get("/pending")).text.count('value="take_back"') == 0
    b = await api(web, csrf, "balance", {})
    assert (b["balance"], b["pending_out"], b["taken_back"]) == (3, 0, 4)
    r = await web.client.post("/answer", data={"csrf": csrf, "verb": "take_back", "transfer": mine})
    assert r.status_code == 409  # the pending screen again, saying why
    assert 'data-kind="usage"' in r.text  # it is no longer a pending payment
    assert count(web) == before + 2


async def test_the_profile_form_says_it_is_public_and_the_members_screen_shows_it(
    web: WebNode,
) -> None:
    csrf = await web.login()
    page = await web.client.get("/profile")
    assert PROFILE_IS_PUBLIC in page.text.replace("&#39;", "'")
    assert 'value="Ana"' in page.text  # the join's name until a profile says otherwise
    fr_page = await web.client.get("/profile", headers=FR)
    assert i18n.catalogue("fr")["profile.public"] in fr_page.text.replace("&#39;", "'")
    before = count(web)
    bad = {"csrf": csrf, "name": "Ana", "place": "Hilltop", "languages": "fr " + "x" * 41}
    r = await web.client.post("/profile", data=bad)
    assert r.status_code == 400
    assert 'value="Hilltop"' in r.text
    assert count(web) == before
    form = {**bad, "about": "I mend bikes", "languages": "fr, en", "contact": "at the market"}
    r = await web.client.post("/profile", data=form)
    assert (r.status_code, r.headers["location"]) == (303, "/profile")
    shown = await api(web, csrf, "profile.show", {})
    profile = shown["profile"]
    assert isinstance(profile, dict)
    assert (profile["place"], profile["languages"], profile["about"]) == (
        "Hilltop",
        ["en", "fr"],
        "I mend bikes",
    )
    members = await web.client.get("/members?search=hill")
    assert "Hilltop" in members.text
    assert "Bruno" not in members.text
    assert f'href="/profile?member={web.my_id}"' in members.text
    other = await web.client.get(f"/profile?member={web.other_id}")
    assert "<h1>Bruno</h1>" in other.text
    assert 'action="/profile"' not in other.text  # another's profile is read, not edited


async def test_statements_download_as_csv_and_as_a_bundle_anyone_can_verify(
    web: WebNode,
) -> None:
    csrf = await web.login()
    await api(web, csrf, "pay", {"to": web.other_id, "amount": 4, "memo": "jam"})
    with web.as_b() as b_local:
        incoming = b_local.pay(web.community, web.me.public, 7)
        web.from_b(b_local)
    await api(web, csrf, "accept", {"transfer": eid(incoming.id)})
    page = await web.client.get("/history?from=2020-01-01")
    assert 'href="/statement.troc?from=2020-01-01"' in page.text
    assert "troc verify FILE" in page.text
    r = await web.client.get("/statement.csv?from=2020-01-01")
    assert 'filename="troc-statement-2020-01-01.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [(x["kind"], x["amount"], x["balance"]) for x in rows] == [
        ("opening", "", "0"),
        ("transfer", "-4", "-4"),
        ("accept", "7", "3"),
        ("closing", "3", "3"),
    ]
    r = await web.client.get("/statement.troc?from=2020-01-01")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/octet-stream"
    verified = verify_bundle(r.content, int(time.time() * 1000))
    assert verified.statement.member == web.me.public
    assert (verified.statement.closing, len(verified.statement.movements)) == (3, 2)
    # A period with none of the member's entries: nothing to prove, said on the page.
    r = await web.client.get("/statement.troc?to=2000-01-01", headers=FR)
    assert r.status_code == 400
    assert 'data-kind="usage"' in r.text
    assert "Relevé de compte" in r.text


async def test_a_request_for_one_of_my_offers_names_it(web: WebNode) -> None:
    csrf = await web.login()
    offer = str(
        (await api(web, csrf, "offer.add", {"title": "Bike repair", "price": "5"}))["offer"]
    )
    offers = await web.client.get("/offers")
    assert f'href="/request?offer={offer}&amp;amount=5"' in offers.text
    form = await web.client.get(f"/request?offer={offer}&amount=5")
    assert "Bike repair" in form.text
    assert f'name="offer" value="{offer}"' in form.text
    data = {"csrf": csrf, "to": web.other_id, "amount": "5", "offer": offer}
    assert (await web.client.post("/request", data=data)).status_code == 303
    made = (await api(web, csrf, "request.list", {}))["outgoing"]
    assert isinstance(made, list)
    assert [(r["offer"], r["amount"]) for r in made] == [(offer, 5)]
