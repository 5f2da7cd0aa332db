"""The CMS services of one app, made together from their ports (:func:`build`)."""

from __future__ import annotations

from dataclasses import dataclass

from server.cms.articles import ArticleService, ViewCounter
from server.cms.opportunities import OpportunityService
from server.cms.plans import PlanService
from server.cms.projects import ProjectService
from server.cms.research import ResearchService
from server.cms.service import CmsPorts


@dataclass(frozen=True, slots=True)
class Cms:
    """One service per collection, and the article view counter (whose ``run`` the app
    starts in its task group and whose ``stop`` it calls at shutdown)."""

    projects: ProjectService
    research: ResearchService
    plans: PlanService
    opportunities: OpportunityService
    articles: ArticleService
    views: ViewCounter


def build(ports: CmsPorts, *, view_flush_seconds: float = 5.0, shared: bool = False) -> Cms:
    """``shared``: the stats counters are shared by several nodes (Redis)."""
    views = ViewCounter(ports, view_flush_seconds, shared=shared)
    return Cms(
        projects=ProjectService(ports),
        research=ResearchService(ports),
        plans=PlanService(ports),
        opportunities=OpportunityService(ports),
        articles=ArticleService(ports, views),
        views=views,
    )
