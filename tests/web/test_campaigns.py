"""The campaign screens of the web app (issue 15): the list with each
campaign's progress, a campaign's page (progress, deadline, pledgers), the
pledge button, taking a pledge back after the deadline (a lapse), closing
one's own campaign, refusals in words with nothing signed, French and
English. In-process: httpx over the ASGI app of a real node on a real SQLite
store. The same screens in a real browser: tests/web/test_browser.py."""

from __future__ import annotations

import re
import time

from tests.web.conftest import WebNode
from troc.node.operations import run_offline

FR = {"accept-language": "fr-FR,fr;q=0.9"}
DAY = 86_400_000


def count(web: WebNode) -> int:
    return int(web.node.local.store.entry_count(web.community))


def campaign_by_b(web: WebNode, deadline_ms: int, goal: int = 8) -> str:
    """b opens a campaign on its own node; a's node receives it (as sync would)."""
    with web.as_b() as b_local:
        made = run_offline(
            b_local,
            "campaign.create",
            {"title": "Oven", "goal": goal, "deadline_ms": deadline_ms, "reward": "bread"},
        )
        web.from_b(b_local)
    return str(made["campaign"])


async def test_a_member_pledges_from_the_campaign_page_and_sees_it_reserved(
    web: WebNode,
) -> None:
    csrf = await web.login()
    oven = campaign_by_b(web, int(time.time() * 1000) + 3 * DAY)
    listed = await web.client.get("/campaigns")
    assert listed.status_code == 200
    assert f'data-campaign="{oven}"' in listed.text
    assert "0 of 8 h pledged (0%)" in listed.text
    page = await web.client.get(f"/campaign/{oven}")
    assert 'id="pledge-button"' in page.text
    assert 'id="withdraw-button"' not in page.text  # nothing to take back
    assert 'id="close-button"' not in page.text  # not a's campaign
    # Over the credit limit (10): refused in words, nothing signed.
    before = count(web)
    r = await web.client.post(f"/campaign/{oven}/pledge", data={"csrf": csrf, "amount": "11"})
    assert r.status_code == 409, r.text
    assert 'data-reason="overdraft"' in r.text
    assert 'value="11"' in r.text  # the amount kept in the form
    assert count(web) == before
    r = await web.client.post(f"/campaign/{oven}/pledge", data={"csrf": csrf, "amount": "6"})
    assert r.status_code == 303, r.text
    page = await web.client.get(r.headers["location"])
    assert "Pledged: the amount is reserved." in page.text
    assert "6 of 8 h pledged (75%)" in page.text
    assert re.search(r'<progress id="progress" max="100" value="75"', page.text)
    assert 'id="my-pledge"' in page.text
    assert 'id="pledge-button"' not in page.text  # one pledge per campaign
    home = await web.client.get("/")
    assert re.search(r'id="reserved"><span class="amount">6</span> h', home.text)
    # Taking it back before the deadline, with no close: refused in words.
    r = await web.client.post(f"/campaign/{oven}/withdraw", data={"csrf": csrf})
    assert r.status_code == 409
    assert 'data-reason="not_closed"' in r.text
    assert "stays reserved until then" in r.text
    fr = await web.client.get(f"/campaign/{oven}", headers=FR)
    assert "6 sur 8 h promis (75 %)" in fr.text
    assert "Votre promesse" in fr.text


async def test_after_the_deadline_a_pledge_is_taken_back_and_an_own_campaign_closes(
    web: WebNode,
) -> None:
    csrf = await web.login()
    past = campaign_by_b(web, int(time.time() * 1000) - 1000)
    page = await web.client.get(f"/campaign/{past}")
    assert 'id="past-deadline"' in page.text
    assert 'name="late"' in page.text
    r = await web.client.post(f"/campaign/{past}/pledge", data={"csrf": csrf, "amount": "4"})
    assert r.status_code == 409
    assert 'data-reason="past_deadline"' in r.text
    r = await web.client.post(
        f"/campaign/{past}/pledge", data={"csrf": csrf, "amount": "4", "late": "1"}
    )
    assert r.status_code == 303, r.text
    page = await web.client.get(f"/campaign/{past}")
    assert 'id="withdraw-button"' in page.text
    assert "the close still wins" in page.text  # the race, in one sentence
    r = await web.client.post(f"/campaign/{past}/withdraw", data={"csrf": csrf})
    assert r.status_code == 303, r.text
    home = await web.client.get("/")
    assert re.search(r'id="lapsed"><span class="amount">4</span> h', home.text)
    assert 'id="reserved"' not in home.text

    # a opens a campaign of its own from the list page, then closes it early.
    r = await web.client.post(
        "/campaigns/create",
        data={"csrf": csrf, "title": "Shed", "goal": "5", "days": "10", "description": ""},
    )
    assert r.status_code == 303, r.text
    shed = r.headers["location"].removeprefix("/campaign/")
    page = await web.client.get(f"/campaign/{shed}")
    assert 'id="close-button"' in page.text
    assert 'id="pledge-button"' not in page.text  # not to one's own campaign
    r = await web.client.post(f"/campaign/{shed}/close", data={"csrf": csrf})
    assert r.status_code == 409
    assert 'data-reason="before_deadline"' in r.text
    r = await web.client.post(f"/campaign/{shed}/close", data={"csrf": csrf, "early": "1"})
    assert r.status_code == 303
    page = await web.client.get(f"/campaign/{shed}")
    assert re.search(r'id="campaign-state">failed<', page.text)
    listed = await web.client.get("/campaigns?open=1", headers=FR)
    assert "Shed" not in listed.text
    assert "Campagnes" in listed.text
    bad = await web.client.post(
        "/campaigns/create", data={"csrf": csrf, "title": "X", "goal": "5", "days": "soon"}
    )
    assert bad.status_code == 400
