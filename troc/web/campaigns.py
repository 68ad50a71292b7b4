"""The web app's campaign screens (issue 15; docs/protocol.md §10): the
community's campaigns with their progress, one campaign's page (progress
towards the goal, deadline, pledgers) with the actions its viewer may take
(pledge; take the pledge back; close, for its author), and a form to open
one.

Like :mod:`troc.web.screens`, each screen runs the operations the CLI runs
(``campaign.*``) through the one door; a refusal shows the same page again
with the ledger's reason in words and nothing signed.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from troc.web.adapter import OpFailed
from troc.web.everyday import usage
from troc.web.screens import Screens, form_text

__all__ = ["routes"]

_DAY_MS = 24 * 3600 * 1000
#: The create form's fields, as the page keeps them after a refusal.
CREATE_FIELDS = ("title", "goal", "days", "description", "reward", "min_pledge")


def routes(screens: Screens, c: Any) -> list[Route]:
    """The routes; ``c`` wraps a handler for a logged-in member of a community."""
    k = Campaigns(screens)
    return [
        Route("/campaigns", c(k.list_page), methods=["GET"]),
        Route("/campaigns/create", c(k.create), methods=["POST"]),
        Route("/campaign/{id:str}", c(k.page), methods=["GET"]),
        Route("/campaign/{id:str}/{verb:str}", c(k.act), methods=["POST"]),
    ]


def percent(c: dict[str, Any]) -> int:
    """How far the pledges go towards the goal, in whole percent (may pass 100)."""
    return int(100 * c["pledged"] // c["goal"])


class Campaigns:
    def __init__(self, screens: Screens) -> None:
        self.s = screens
        self.door = screens.door

    async def list_page(
        self,
        request: Request,
        values: dict[str, str] | None = None,
        error: dict[str, Any] | None = None,
        status: int = 200,
    ) -> Response:
        q = request.query_params
        params: dict[str, Any] = {"text": q.get("text", "")[:200], "open": bool(q.get("open"))}
        found = await self.door.call("campaign.list", params)
        return self.s.render(
            request,
            "campaigns.html",
            status,
            community=request.state.community,
            campaigns=[{**c, "percent": percent(c)} for c in found["campaigns"]],
            names=found["names"],
            q=dict(q),
            values=values or {"days": "30"},
            error=error,
        )

    async def create(self, request: Request) -> Response:
        form = await request.form()
        values = {k: form_text(form, k) for k in CREATE_FIELDS}
        try:
            days = int(values["days"] or "0")
            if not 1 <= days <= 3660:
                raise usage("the deadline is 1 to 3660 days away")
            params: dict[str, Any] = {
                "title": values["title"][:200],
                "goal": values["goal"],
                "deadline_ms": int(time.time() * 1000) + days * _DAY_MS,
                "description": values["description"][:4000],
                "reward": values["reward"][:1000],
            }
            if values["min_pledge"]:
                params["min_pledge"] = values["min_pledge"]
            made = await self.door.call("campaign.create", params)
        except ValueError:
            return await self.list_page(
                request, values, self.s.failure(request, usage("days: a whole number")), 400
            )
        except OpFailed as failed:
            error = self.s.failure(request, failed)
            return await self.list_page(request, values, error, failed.status)
        return self.s.done(request, f"/campaign/{made['campaign']}", "flash.campaign_created")

    async def page(
        self,
        request: Request,
        error: dict[str, Any] | None = None,
        status: int = 200,
        amount: str = "",
    ) -> Response:
        try:
            c = await self.door.call("campaign.show", {"campaign": request.path_params["id"]})
        except OpFailed as failed:
            return await self.list_page(
                request, error=self.s.failure(request, failed), status=failed.status
            )
        me = self.door.member
        mine = [p for p in c["pledge_list"] if p["pledger"] == me]
        own = c["author"] == me
        # What the viewer may do: the node's own rules and guards decide the
        # rest (a refusal comes back with its reason in words).
        can_pledge = not own and not mine and c["state"] == "open"
        can_withdraw = bool(mine) and mine[0]["status"] in ("reserved", "lapsed")
        can_withdraw = can_withdraw and (c["state"] != "open" or c["deadline_passed"])
        return self.s.render(
            request,
            "campaign.html",
            status,
            community=request.state.community,
            c=c,
            percent=percent(c),
            names=c["names"],
            mine=mine[0] if mine else None,
            own=own,
            can_pledge=can_pledge,
            can_withdraw=can_withdraw,
            can_close=own and c["state"] == "open",
            error=error,
            amount=amount,
        )

    async def act(self, request: Request) -> Response:
        """POST /campaign/ID/pledge (``amount``, ``late``), /withdraw, /close (``early``)."""
        verb = request.path_params["verb"]
        campaign = request.path_params["id"]
        form = await request.form()
        params: dict[str, Any] = {"campaign": campaign}
        if verb == "pledge":
            params["amount"] = form_text(form, "amount", 40)
            params["late"] = bool(form.get("late"))
        elif verb == "close":
            params["early"] = bool(form.get("early"))
        elif verb != "withdraw":
            return Response("no such action", status_code=404, media_type="text/plain")
        try:
            await self.door.call(f"campaign.{verb}", params)
        except OpFailed as failed:
            error = self.s.failure(request, failed)
            return await self.page(request, error, failed.status, params.get("amount", ""))
        return self.s.done(request, f"/campaign/{campaign}", f"flash.campaign_{verb}")
