"""The five CMS collections of the schema (``cms-schema.md`` sections 1.2 to 1.6): their fields,
types and enums exactly as the seed has them (camelCase, and the seed's snake_case where it
has it), and what the service needs to know of each (:class:`Kind`).

Additions to the seed, all documented in ``docs/api.md``: an ``id`` key on sales contacts
and activities (so that a PATCH can edit them by id), ``stageHistory`` on opportunities,
``likedBy`` on articles (who liked it, so that a like counts once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from server.cms.schema import (
    MAX_NAME,
    Choice,
    FieldType,
    Flag,
    Integer,
    ListOf,
    Moment,
    Number,
    RecordRef,
    Shape,
    Text,
    UserRef,
)

DOCUMENTS: Final = "business_documents"
PROJECTS: Final = "projects"
RESEARCH: Final = "market_research"
PLANS: Final = "strategic_plans"
SALES: Final = "sales_opportunities"
ARTICLES: Final = "knowledge_articles"

LEVEL: Final = Choice(("high", "medium", "low"))
PROJECT_STATUSES: Final = ("planning", "active", "on_hold", "completed", "cancelled")
RESEARCH_STATUSES: Final = ("draft", "validated", "published")
PLAN_STATUSES: Final = ("draft", "under_review", "approved", "executing", "completed", "archived")
STAGES: Final = (
    "prospect",
    "qualified_lead",
    "proposal",
    "negotiation",
    "won",
    "lost",
    "stalled",
)
ARTICLE_STATUSES: Final = ("draft", "published", "archived")


def _name() -> Text:
    return Text(MAX_NAME)


def _texts() -> ListOf:
    return ListOf(Text(2000), unique=False)


def _refs(collection: str) -> ListOf:
    return ListOf(RecordRef(collection), unique=True)


def _shape(key: str | None = None, required: tuple[str, ...] = (), **fields: FieldType) -> Shape:
    return Shape(MappingProxyType(fields), key=key, required=required)


SEO: Final = _shape(metaTitle=_name(), metaDescription=Text(2000), keywords=_texts())

PROJECT: Final = _shape(
    projectId=Text(128),
    name=_name(),
    description=Text(),
    status=Choice(PROJECT_STATUSES),
    startDate=Moment(),
    targetCompletionDate=Moment(),
    actualCompletionDate=Moment(),
    owner=UserRef(),
    stakeholders=ListOf(
        _shape("userId", ("userId",), userId=UserRef(), role=_name(), joinedAt=Moment())
    ),
    objectives=ListOf(
        _shape(
            "id",
            id=Text(128),
            description=Text(),
            successCriteria=_texts(),
            priority=Choice(("critical", "high", "medium", "low")),
            status=Choice(("not_started", "in_progress", "completed", "blocked")),
        )
    ),
    linkedDocuments=_refs(DOCUMENTS),
    linkedStrategies=_refs(PLANS),
    relatedProjects=_refs(PROJECTS),
    budget=Number(0),
    allocatedResources=_texts(),
    riskAssessment=Text(),
    required=("name",),
)

RESEARCH_SHAPE: Final = _shape(
    researchId=Text(128),
    title=_name(),
    type=Choice(("market_analysis", "competitor_analysis", "trend_research", "customer_research")),
    findings=ListOf(
        _shape(
            "id",
            id=Text(128),
            title=_name(),
            description=Text(),
            impact=LEVEL,
            evidence=_texts(),
            implications=Text(),
        )
    ),
    targetMarkets=ListOf(
        _shape(
            "segment",
            ("segment",),
            segment=_name(),
            size=Number(0),
            growth_rate=Number(),
            key_players=_texts(),
            opportunities=_texts(),
            threats=_texts(),
        )
    ),
    competitors=ListOf(
        _shape(
            "id",
            id=Text(128),
            name=_name(),
            strengths=_texts(),
            weaknesses=_texts(),
            market_share=Number(0, 100),
            pricing_strategy=Text(),
            unique_selling_proposition=Text(),
        )
    ),
    researchDate=Moment(),
    nextReviewDate=Moment(),
    sources=ListOf(
        _shape(
            "name",
            ("name",),
            name=_name(),
            url=Text(2000),
            accessedDate=Moment(),
            credibility=LEVEL,
        )
    ),
    author=UserRef(),
    status=Choice(RESEARCH_STATUSES),
    required=("title",),
)

KEY_RESULT: Final = _shape(
    "id",
    id=Text(128),
    description=Text(),
    target=Number(),
    actual=Number(),
    unit=Text(50),
    dueDate=Moment(),
    status=Choice(("on_track", "at_risk", "off_track", "completed")),
)
PLAN: Final = _shape(
    planId=Text(128),
    title=_name(),
    planType=Choice(("annual", "quarterly", "multi_year", "product", "market")),
    fiscalYear=Integer(1900, 2200),
    quarter=Integer(1, 4),
    startDate=Moment(),
    endDate=Moment(),
    vision=Text(),
    mission=Text(),
    keyObjectives=ListOf(
        _shape(
            "id",
            id=Text(128),
            title=_name(),
            description=Text(),
            keyResults=ListOf(KEY_RESULT),
        )
    ),
    initiatives=_refs(PROJECTS),
    budgetAllocation=_shape(
        total=Number(0),
        byFunction=_shape(
            sales=Number(0),
            marketing=Number(0),
            operations=Number(0),
            technology=Number(0),
            other=Number(0),
        ),
    ),
    risks=ListOf(
        _shape(
            "id",
            id=Text(128),
            description=Text(),
            probability=LEVEL,
            impact=LEVEL,
            mitigation_strategy=Text(),
            owner=UserRef(),
        )
    ),
    kpis=ListOf(
        _shape(
            "id",
            id=Text(128),
            name=_name(),
            target=Number(),
            unit=Text(50),
            measurement_frequency=Text(100),
            owner=UserRef(),
            current_value=Number(),
            last_updated=Moment(),
        )
    ),
    owner=UserRef(),
    approvers=ListOf(UserRef(), unique=True),
    status=Choice(PLAN_STATUSES),
    required=("title",),
)

OPPORTUNITY: Final = _shape(
    opportunityId=Text(128),
    account=_name(),
    title=_name(),
    description=Text(),
    value=Number(0),
    currency=Choice(
        ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "CNY", "INR", "SEK", "NOK", "DKK")
    ),
    stage=Choice(STAGES),
    createdDate=Moment(),
    expectedCloseDate=Moment(),
    owner=UserRef(),
    accountManager=UserRef(),
    contacts=ListOf(
        _shape(
            "id",
            id=Text(128),
            name=_name(),
            email=Text(320),
            phone=Text(50),
            title=_name(),
            department=_name(),
            lastContact=Moment(),
        )
    ),
    nextAction=Text(2000),
    nextActionDate=Moment(),
    activities=ListOf(
        _shape(
            "id",
            id=Text(128),
            type=Text(50),
            date=Moment(),
            notes=Text(),
            participant=UserRef(),
        )
    ),
    source=Choice(("inbound", "outbound", "referral", "event", "partnership")),
    priority=LEVEL,
    probability=Number(0, 100),
    linkedDocuments=_refs(DOCUMENTS),
    required=("title",),
)

ARTICLE: Final = _shape(
    articleId=Text(128),
    title=_name(),
    slug=Text(200),
    category=_name(),
    content=Text(1_000_000),
    summary=Text(5000),
    author=UserRef(),
    # Set by publish / unpublish / DELETE only (a server field), typed for the list filter.
    status=Choice(ARTICLE_STATUSES),
    featured=Flag(),
    seo=SEO,
    tags=ListOf(Text(100), unique=True),
    relatedArticles=_refs(ARTICLES),
    linkedResources=_texts(),
    required=("title",),
)


@dataclass(frozen=True)
class Kind:
    """What the service knows of one collection.

    ``owner_field`` holds the user with the admin right on a record (the creator when the
    body names nobody); ``edit_fields`` / ``approve_fields`` name the users with the edit /
    approve right (``stakeholders.userId``: a field of the objects of an array);
    ``archive_status``: what DELETE sets (None: DELETE deletes); ``transitions``: the status
    changes a PATCH may make (None: any); ``server_fields``: set by the server only.
    """

    collection: str
    id_field: str
    resource_type: str
    label: str
    path: str
    shape: Shape
    owner_field: str
    status_field: str
    initial_status: str
    edit_fields: tuple[str, ...] = ()
    approve_fields: tuple[str, ...] = ()
    archive_status: str | None = None
    transitions: Mapping[str, frozenset[str]] | None = None
    server_fields: frozenset[str] = frozenset()
    filters: Mapping[str, str] = field(default_factory=dict)
    ranges: tuple[str, ...] = ()
    sorts: frozenset[str] = frozenset()
    default_sort: str = "updatedAt"
    updated_field: str = "updatedAt"
    tags: bool = False


def _moves(**moves: str) -> Mapping[str, frozenset[str]]:
    return MappingProxyType({state: frozenset(to.split()) for state, to in moves.items()})


KINDS: Final[Mapping[str, Kind]] = MappingProxyType(
    {
        kind.collection: kind
        for kind in (
            Kind(
                PROJECTS,
                "projectId",
                "project",
                "project",
                "projects",
                PROJECT,
                owner_field="owner",
                status_field="status",
                initial_status="planning",
                edit_fields=("stakeholders.userId",),
                server_fields=frozenset({"createdAt", "updatedAt", "createdBy"}),
                filters={"status": "status", "owner": "owner"},
                ranges=("startDate", "targetCompletionDate", "budget"),
                sorts=frozenset({"name", "createdAt", "updatedAt", "startDate", "budget"}),
            ),
            Kind(
                RESEARCH,
                "researchId",
                "market_research",
                "market research",
                "market-research",
                RESEARCH_SHAPE,
                owner_field="author",
                status_field="status",
                initial_status="draft",
                transitions=_moves(
                    draft="validated", validated="published draft", published="draft"
                ),
                server_fields=frozenset({"createdAt", "updatedAt"}),
                filters={"status": "status", "type": "type", "author": "author"},
                ranges=("researchDate", "nextReviewDate"),
                sorts=frozenset({"title", "createdAt", "updatedAt", "researchDate"}),
            ),
            Kind(
                PLANS,
                "planId",
                "strategic_plan",
                "strategic plan",
                "strategic-plans",
                PLAN,
                owner_field="owner",
                status_field="status",
                initial_status="draft",
                approve_fields=("approvers",),
                archive_status="archived",
                transitions=_moves(approved="executing", executing="completed"),
                server_fields=frozenset({"createdAt", "updatedAt", "createdBy", "approvalDate"}),
                filters={
                    "status": "status",
                    "planType": "planType",
                    "owner": "owner",
                    "fiscalYear": "fiscalYear",
                    "quarter": "quarter",
                },
                ranges=("startDate", "endDate"),
                sorts=frozenset({"title", "createdAt", "updatedAt", "startDate", "fiscalYear"}),
            ),
            Kind(
                SALES,
                "opportunityId",
                "sales_opportunity",
                "sales opportunity",
                "sales-opportunities",
                OPPORTUNITY,
                owner_field="owner",
                status_field="stage",
                initial_status="prospect",
                edit_fields=("accountManager",),
                server_fields=frozenset(
                    {"createdAt", "updatedAt", "createdBy", "actualCloseDate", "stageHistory"}
                ),
                filters={
                    "stage": "stage",
                    "owner": "owner",
                    "accountManager": "accountManager",
                    "source": "source",
                    "priority": "priority",
                    "currency": "currency",
                },
                ranges=("expectedCloseDate", "value", "probability"),
                sorts=frozenset(
                    {"title", "createdAt", "updatedAt", "value", "expectedCloseDate", "probability"}
                ),
            ),
            Kind(
                ARTICLES,
                "articleId",
                "knowledge_article",
                "knowledge article",
                "knowledge-articles",
                ARTICLE,
                owner_field="author",
                status_field="status",
                initial_status="draft",
                archive_status="archived",
                transitions=_moves(),
                server_fields=frozenset(
                    {
                        "status",
                        "publishedDate",
                        "updatedDate",
                        "views",
                        "shares",
                        "likes",
                        "likedBy",
                        "createdAt",
                        "createdBy",
                    }
                ),
                filters={
                    "status": "status",
                    "category": "category",
                    "author": "author",
                    "featured": "featured",
                    "slug": "slug",
                },
                ranges=("publishedDate",),
                sorts=frozenset({"title", "createdAt", "publishedDate", "views", "likes"}),
                default_sort="createdAt",
                updated_field="updatedDate",
                tags=True,
            ),
        )
    }
)
