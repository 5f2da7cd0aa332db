"""Market research (``market_research``): findings, target markets, competitors and sources as
in the seed, edited by key in a PATCH (findings and competitors by ``id``, target markets by
``segment``, sources by ``name``); ``status`` moves draft -> validated -> published (and back
to draft from validated or published), one step at a time (``tables.py``)."""

from __future__ import annotations

from server.cms.service import CmsPorts, CmsService
from server.cms.tables import KINDS, RESEARCH


class ResearchService(CmsService):
    """Market research records: the generic service with the research status table."""

    def __init__(self, ports: CmsPorts) -> None:
        super().__init__(ports, KINDS[RESEARCH])
