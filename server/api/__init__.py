"""The REST API under ``/api``: JSON in and out, problem+json errors (``docs/api.md``)."""

from __future__ import annotations

from starlette.routing import BaseRoute


def api_routes() -> list[BaseRoute]:
    """Every route of the API, relative to ``/api``."""
    from server.api import audit, auth, documents, revisions, search
    from server.api.approvals import routes as approval_routes
    from server.api.comments import routes as comment_routes
    from server.api.locks import routes as lock_routes
    from server.api.notifications import routes as notification_routes
    from server.api.people import routes as people_routes
    from server.api.presence import routes as presence_routes

    routes = [
        *auth.routes,
        *documents.routes,
        *revisions.routes,
        *audit.routes,
        *search.routes,
        *lock_routes,
        *presence_routes,
    ]
    routes += [*comment_routes, *notification_routes, *approval_routes, *people_routes]
    routes += cms_routes()
    from server.api import features, permissions, roles, stats, users

    routes += [*users.routes, *roles.routes, *permissions.routes, *features.routes]
    routes += stats.routes
    return routes


def cms_routes() -> list[BaseRoute]:
    """The CMS collections beyond business documents (``server/cms/``)."""
    from server.api import (
        knowledge_articles,
        market_research,
        projects,
        sales_opportunities,
        strategic_plans,
    )

    return [
        *projects.routes,
        *market_research.routes,
        *strategic_plans.routes,
        *sales_opportunities.routes,
        *knowledge_articles.routes,
    ]
