"""``/api/market-research``: market research records (``docs/api.md``); the rules are
:class:`server.cms.research.ResearchService`'s."""

from __future__ import annotations

from starlette.routing import BaseRoute

from server.api.cms_common import Resource

resource = Resource("market-research", lambda collab: collab.cms.research)
routes: list[BaseRoute] = resource.routes()
