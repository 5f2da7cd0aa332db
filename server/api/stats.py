"""Activity counters over REST, for admins (``stats:read``; ``docs/administration.md``).

``GET /api/stats?period=hour|day&last=N&type=...``: per type (``edits``, ``comments``,
``views``, ``signins``; repeatable ``type``, default all), the counts of the last ``N``
periods (hour: 1..192, default 24; day: 1..30, default 7), oldest first:
``{"period", "types": {"edits": [{"start", "count"}, ...], ...}}``.
"""

from __future__ import annotations

from typing import Final

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from server.admin.stats import TYPES
from server.api.common import ApiError, check_params, collab_of, query_int, require_permission
from server.identity.roles import READ_STATS

PARAMS: Final = frozenset({"period", "last", "type"})
LAST: Final = {"hour": (24, 192), "day": (7, 30)}


async def get_stats(request: Request) -> Response:
    await require_permission(request, READ_STATS)
    check_params(request, PARAMS, frozenset({"type"}))
    period = request.query_params.get("period") or "hour"
    if period not in LAST:
        raise ApiError(400, "invalid query parameter", "period must be hour or day")
    default, most = LAST[period]
    last = query_int(request, "last", default, 1, most)
    types = tuple(t for t in request.query_params.getlist("type") if t) or TYPES
    counts = await collab_of(request).stats.read(period=period, last=last, types=types)
    return JSONResponse(
        {
            "period": period,
            "types": {
                kind: [{"start": start.isoformat(), "count": count} for start, count in values]
                for kind, values in counts.items()
            },
        }
    )


routes: list[BaseRoute] = [Route("/stats", get_stats, methods=["GET"])]
