"""Sales opportunities (``sales_opportunities``): stage transitions with their history, the
close date set on won / lost, and the pipeline aggregation.

Every change of ``stage`` (at creation too) appends ``{"from", "to", "at", "by"}`` to
``stageHistory``; reaching ``won`` or ``lost`` sets ``actualCloseDate`` (now), leaving them
clears it. :meth:`OpportunityService.pipeline` is the schema's pipeline per stage: count,
total value and probability-weighted value, in groups per currency (never summed across
currencies), over the opportunities the caller may view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from persistence.content.cms_ports import PipelineGroup
from server.cms.service import CmsPorts, CmsService, Listing, now_ms
from server.cms.tables import KINDS, SALES, STAGES
from server.identity.authentication import Principal

CLOSED: Final = frozenset({"won", "lost"})
MAX_HISTORY: Final = 500


def _step(current: object, target: str, by: str) -> dict[str, Any]:
    return {"from": current, "to": target, "at": now_ms(), "by": by}


class OpportunityService(CmsService):
    """Sales opportunities (see the module docstring)."""

    def __init__(self, ports: CmsPorts) -> None:
        super().__init__(ports, KINDS[SALES])

    async def before_create(self, actor: Principal, record: dict[str, Any]) -> None:
        stage = record["stage"]
        record["stageHistory"] = [_step(None, stage, actor.user_id)]
        record.setdefault("createdDate", now_ms())
        if stage in CLOSED:
            record["actualCloseDate"] = now_ms()

    async def before_update(
        self, actor: Principal, record: Mapping[str, Any], changes: dict[str, Any]
    ) -> None:
        if "stage" not in changes:
            return
        current, target = record.get("stage"), changes["stage"]
        history = record.get("stageHistory")
        history = list(history) if isinstance(history, list) else []
        changes["stageHistory"] = [*history, _step(current, target, actor.user_id)][-MAX_HISTORY:]
        if target in CLOSED:
            changes["actualCloseDate"] = now_ms()
        elif current in CLOSED:
            changes["actualCloseDate"] = None

    async def pipeline(self, actor: Principal, listing: Listing) -> dict[str, Any]:
        """Per stage (in the seed's order) and currency: count, total, weighted."""
        query = self.query(listing, await self.visible(actor))
        groups = await self.ports.queries.sales_pipeline(query)
        order = {stage: n for n, stage in enumerate(STAGES)}
        groups.sort(key=lambda g: (order.get(g.stage or "", len(order)), g.currency or ""))
        return {
            "stages": [_group_view(group) for group in groups],
            "currencies": _currency_totals(groups),
        }


def _group_view(group: PipelineGroup) -> dict[str, Any]:
    return {
        "stage": group.stage,
        "currency": group.currency,
        "count": group.count,
        "totalValue": round(group.total, 2),
        "weightedValue": round(group.weighted, 2),
    }


def _currency_totals(groups: list[PipelineGroup]) -> list[dict[str, Any]]:
    """The open pipeline (stages other than won / lost) per currency."""
    totals: dict[str | None, list[float]] = {}
    for group in groups:
        if group.stage in CLOSED:
            continue
        found = totals.setdefault(group.currency, [0, 0.0, 0.0])
        found[0] += group.count
        found[1] += group.total
        found[2] += group.weighted
    return [
        {
            "currency": currency,
            "openCount": int(count),
            "openValue": round(total, 2),
            "weightedValue": round(weighted, 2),
        }
        for currency, (count, total, weighted) in sorted(
            totals.items(), key=lambda item: item[0] or ""
        )
    ]
