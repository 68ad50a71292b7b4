"""The web app and its JSON API show a certified payment held parked for
want of the payer's history (docs/witness.md §6.1, "What the node shows";
docs/http-api.md): listed as acceptable now, accept only, and accepted from
the pending screen. Browser-free (httpx against the ASGI app, a real node
and SQLite store; the certificate is voted offline by the witnesses' keys).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.helpers import certify
from tests.parked_payment import parked_payments
from tests.web.conftest import client_of
from troc.node.node import NodeConfig, open_node
from troc.node.ops import eid
from troc.web.adapter import NodeDoor
from troc.web.app import create_app
from troc.web.auth import WebAuth, allowed_hosts


async def test_the_pending_screen_accepts_a_parked_certified_payment(tmp_path: Path) -> None:
    made = parked_payments(tmp_path)
    c, newcomer, paid, unchecked = made.community, made.newcomer, made.paid, made.unchecked
    config = NodeConfig(home=tmp_path / "n", sync_interval=600, control_socket=False)
    async with open_node(config, newcomer) as node:
        auth = WebAuth()
        app = create_app(NodeDoor(node), auth, allowed_hosts("127.0.0.1", 8787))
        async with client_of(app) as client:
            r = await client.get(f"/login?token={auth.mint_login()}")
            assert r.status_code == 303, r.text
            page = await client.get("/")
            found = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
            assert found is not None
            csrf = found.group(1)
            # The home screen asks for an answer: "… 7 h — Answer".
            assert f'data-transfer="{eid(paid.id)}"' in page.text

            async def api(op: str, params: dict[str, object]) -> dict[str, object]:
                r = await client.post(f"/api/op/{op}", json=params, headers={"x-csrf-token": csrf})
                assert r.status_code == 200, r.text
                result: dict[str, object] = r.json()["result"]
                return result

            listed = await api("pending", {})
            # The certified one only: the other is unchecked (no certificate).
            rows: Any = listed["incoming"]
            shown = [(t["transfer"], t["final"], t["history_checked"]) for t in rows]
            assert shown == [(eid(paid.id), True, False)]
            balance = await api("balance", {})
            assert (balance["pending_in"], balance["pending_in_parked"]) == (7, 7)

            # The pending screen: a note, an accept button, no decline form.
            page = await client.get("/pending")
            card = page.text.split(f'data-transfer="{eid(paid.id)}"', 1)[1].split("</li>", 1)[0]
            assert "still fetching the payer" in card
            assert 'value="accept"' in card
            assert 'value="decline"' not in card
            assert eid(unchecked.id) not in page.text

            r = await client.post(
                "/answer",
                data={"transfer": eid(paid.id), "verb": "accept", "csrf": csrf},
            )
            assert r.status_code == 303, r.text
            assert (await api("pending", {}))["incoming"] == []
            assert node.local.store.head(c, newcomer.public).balance == 7  # type: ignore[union-attr]


async def test_live_pages_hear_when_a_parked_payment_becomes_acceptable(tmp_path: Path) -> None:
    """The web app's pages refresh on the node's subscription (``/events``):
    a payment held parked is not stored, yet its becoming acceptable is
    told there, whichever of the payment and its certificate comes last."""
    made = parked_payments(tmp_path, parked=False)
    config = NodeConfig(home=tmp_path / "n", sync_interval=600, control_socket=False)
    async with open_node(config, made.newcomer) as node, node.subscribe() as channel:
        local = node.local
        # The payment first (parked, no certificate: nothing to tell), then its certificate.
        local.ingest_many([made.paid.wire])
        assert local.store.waiting_count() == 1
        with pytest.raises(trio.WouldBlock):
            channel.receive_nowait()
        assert local.ingest_certificate(certify(made.paid)).ok
        assert [channel.receive_nowait().id] == [made.paid.id]
        # The certificate first (kept alone), then the payment.
        assert local.ingest_certificate(certify(made.unchecked)).ok
        local.ingest_many([made.unchecked.wire])
        assert [channel.receive_nowait().id] == [made.unchecked.id]
        with pytest.raises(trio.WouldBlock):
            channel.receive_nowait()
