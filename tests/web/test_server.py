"""The web app served by hypercorn inside the node's nursery, on a real
socket on 127.0.0.1: live updates over server-sent events, a busy port, the
forms' refusals in the member's language, and the message catalogues."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import httpx
import pytest
import trio

from tests.web.conftest import WebNode, web_node
from troc.node.notices import PROFILE_IS_PUBLIC
from troc.node.ops import eid
from troc.protocol.entry import Kind
from troc.web import i18n
from troc.web.adapter import HTTP_STATUS
from troc.web.server import PORT_TRIES, parse_web_addr, serve_web

TEMPLATES = Path(i18n.__file__).parent / "templates"


async def test_an_open_page_hears_of_a_stored_entry_within_a_second(tmp_path: Path) -> None:
    async with web_node(tmp_path) as web, trio.open_nursery() as nursery:
        server = await nursery.start(serve_web, web.node, "127.0.0.1", 0)
        assert server is not None
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            r = await client.get(server.login_url().removeprefix(server.base_url))
            assert r.status_code == 303
            async with client.stream("GET", "/events") as events:
                assert events.headers["content-type"].startswith("text/event-stream")
                lines = events.aiter_lines()
                assert (await lines.__anext__()).startswith("retry:")
                with web.as_b() as b_local:
                    entry = b_local.offer(web.community, "Jam")
                    stored_at = time.monotonic()
                    web.from_b(b_local)
                with trio.fail_after(5):
                    async for line in lines:
                        if line.startswith("data:"):
                            data = json.loads(line[5:])
                            break
                assert time.monotonic() - stored_at < 1.0
                assert data["kind"] == "offer"
                assert data["entry"] == eid(entry.id)
        nursery.cancel_scope.cancel()


async def test_a_busy_port_moves_the_app_to_the_next_and_never_stops_the_node(
    tmp_path: Path,
) -> None:
    holders = []
    try:
        first = socket.socket()
        first.bind(("127.0.0.1", 0))
        first.listen()
        holders.append(first)
        port = first.getsockname()[1]
        async with web_node(tmp_path) as web, trio.open_nursery() as nursery:
            server = await nursery.start(serve_web, web.node, "127.0.0.1", port)
            assert server is not None
            assert server.port != port
            async with httpx.AsyncClient() as client:
                r = await client.get(f"{server.base_url}/static/app.css")
                assert r.status_code == 200
            nursery.cancel_scope.cancel()
    finally:
        for s in holders:
            s.close()


async def test_no_free_port_leaves_the_node_running_without_its_app(tmp_path: Path) -> None:
    holders = []
    try:
        # PORT_TRIES consecutive busy ports (found by trial: bound by this test).
        base = 20000 + (int(time.time() * 1000) % 20000)
        while len(holders) < PORT_TRIES and base < 60000:
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", base + len(holders)))
                s.listen()
                holders.append(s)
            except OSError:
                s.close()
                for h in holders:
                    h.close()
                holders, base = [], base + PORT_TRIES + 1
        port = holders[0].getsockname()[1]
        async with web_node(tmp_path) as web, trio.open_nursery() as nursery:
            server = await nursery.start(serve_web, web.node, "127.0.0.1", port)
            assert server is None
            assert "web.login" not in web.node.extra_ops
            assert (await web.node.run_op("whoami", {}))["member"] == web.my_id
    finally:
        for s in holders:
            s.close()


def test_web_addresses_parse() -> None:
    assert parse_web_addr("127.0.0.1:8787") == ("127.0.0.1", 8787)
    assert parse_web_addr("[::1]:9") == ("::1", 9)
    assert parse_web_addr(":8080") == ("127.0.0.1", 8080)
    assert parse_web_addr("0.0.0.0:80") == ("0.0.0.0", 80)
    from troc.errors import LocalProtocolError

    with pytest.raises(LocalProtocolError):
        parse_web_addr("localhost:http")


async def test_an_overdraft_in_the_form_is_refused_in_french_and_nothing_is_signed(
    web: WebNode,
) -> None:
    csrf = await web.login()
    before = web.node.local.store.entry_count(web.community)
    r = await web.client.post(
        "/pay",
        data={"csrf": csrf, "to": web.other_id, "amount": "11", "memo": "trop"},
        headers={"accept-language": "fr-FR,fr;q=0.9,en;q=0.5"},
    )
    assert r.status_code == 409
    assert 'data-reason="overdraft"' in r.text
    assert "dépasser votre limite de crédit" in r.text
    assert 'value="trop"' in r.text  # the form keeps what was typed
    assert web.node.local.store.entry_count(web.community) == before


def test_accept_language_and_the_cookie_choose_the_language() -> None:
    assert i18n.choose_language(None, "fr-CA,fr;q=0.9,en;q=0.8") == "fr"
    assert i18n.choose_language(None, "de-DE,de;q=0.9,en;q=0.5,fr;q=0.4") == "en"
    assert i18n.choose_language(None, "de, fr;q=0.3") == "fr"
    assert i18n.choose_language(None, "") == "en"
    assert i18n.choose_language(None, "fr;q=0") == "en"
    assert i18n.choose_language("en", "fr") == "en"
    assert i18n.choose_language("xx", "fr") == "fr"


def test_the_catalogues_have_the_same_keys_and_every_key_used_exists() -> None:
    en, fr = i18n.catalogue("en"), i18n.catalogue("fr")
    assert set(en) == set(fr)
    for lang in (en, fr):
        for key, text in lang.items():
            assert text.strip(), key
            # Same placeholders in both languages.
            assert set(re.findall(r"{(\w+)}", en[key])) == set(re.findall(r"{(\w+)}", text))
    used = set()
    sources = [*TEMPLATES.glob("*.html"), *TEMPLATES.parent.glob("*.py")]
    for path in sources:
        used |= set(re.findall(r"""t\(\s*["']([a-z_]+\.[a-z_]+)["']""", path.read_text()))
        used |= set(re.findall(r'"(flash\.[a-z_]+)"', path.read_text()))
    assert used
    fixed = {k for k in used if not k.endswith("_")}
    assert fixed <= set(en), fixed - set(en)
    # Keys built from a value ("kind." ~ r.kind …): every value has its text.
    built = {f"kind.{k.value}" for k in Kind} | {f"kind.{k}" for k in HTTP_STATUS}
    built |= {f"node.state_{s}" for s in ("alive", "unresponsive", "dead")}
    built |= {f"request.state_{s}" for s in ("open", "paid", "refused", "expired")}
    built |= {f"offers.side_{s}" for s in ("offer", "want")} | {
        f"lang.{la}" for la in i18n.LANGUAGES
    }
    assert built <= set(en), built - set(en)
    # French that a SEL would recognise, not English left behind.
    assert fr["home.balance"] == "Solde"
    assert fr["nav.offers"] == "Offres et demandes"
    # The notice a member reads where it types its profile: the node's own words.
    assert en["profile.public"] == PROFILE_IS_PUBLIC


async def test_the_history_shows_the_running_balance_and_downloads_as_csv(web: WebNode) -> None:
    import csv
    import io

    csrf = await web.login()
    headers = {"x-csrf-token": csrf}

    async def op(name: str, params: dict[str, object]) -> dict[str, object]:
        r = await web.client.post(f"/api/op/{name}", json=params, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json()["result"])

    paid = str((await op("pay", {"to": web.other_id, "amount": 4}))["transfer"])
    with web.as_b() as b_local:
        b_local.decline(web.community, b_local.find_transfer(web.community, paid))
        incoming = b_local.pay(web.community, web.me.public, 7, memo="eggs")
        web.from_b(b_local)
    await op("reclaim", {"transfer": paid})
    await op("accept", {"transfer": eid(incoming.id)})
    await op("pay", {"to": web.other_id, "amount": 2})
    r = await web.client.get("/history.csv")
    assert r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    # Newest first: the statement's movements, with the balance after each.
    assert [(x["kind"], x["amount"], x["balance"], x["name"]) for x in rows] == [
        ("transfer", "-2", "5", "Bruno"),
        ("accept", "7", "7", "Bruno"),
        ("reclaim", "4", "0", "Bruno"),
        ("transfer", "-4", "-4", "Bruno"),
    ]
    assert (await op("balance", {}))["balance"] == 5
    with_b = await web.client.get(f"/history.csv?with={web.other_id}")
    assert {x["counterparty"] for x in csv.DictReader(io.StringIO(with_b.text))} == {web.other_id}
    future = await web.client.get("/history.csv?from=2999-01-01")
    assert list(csv.DictReader(io.StringIO(future.text))) == []
    page = await web.client.get("/history", headers={"accept-language": "fr"})
    assert "Solde après" in page.text
    assert "+7" in page.text
