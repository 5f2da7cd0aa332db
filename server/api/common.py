"""What every REST endpoint shares: authentication, the access check, JSON bodies, errors.

Endpoints are plain Starlette handlers. Each starts with :func:`authenticated` (or
:func:`require`, which also checks the caller's right on a document through the one
authorization function of :mod:`server.identity.rights`) and reads its body with :func:`read_json`
into a pydantic model that forbids unknown fields. Errors are raised, never returned: the
handlers installed by :func:`exception_handlers` turn them into RFC 9457 problem+json
responses with the right status (400 bad JSON or id, 401, 403, 404, 409, 413, 415, 422 with
the field errors, 429 with Retry-After, 503 when a store is unavailable).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Coroutine, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from crdt.ids import InvalidIdError, check_document_id, is_reserved_id
from protocol.errors import MalformedMessage
from protocol.jsontext import parse_json
from server.errors import (
    UnavailableError,
    classify,
    invalid_body,
    mapped_types,
    problem,
)
from server.identity.authentication import Principal, origin_allowed
from server.identity.rights import Right
from server.ops import counters
from server.ops.proxies import client_address, forwarded_scheme

if TYPE_CHECKING:
    from server.api.ports import ApiCollab

log = logging.getLogger(__name__)

MAX_BODY_BYTES: Final = 1024 * 1024
M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    """An error answered as problem+json: ``status``, a short ``title``, a ``detail``."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class Model(BaseModel):
    """Base of request bodies: unknown fields are an error, strings are stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


def problem_response(
    status: int,
    title: str,
    detail: str = "",
    *,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"type": "about:blank", "title": title, "status": status}
    if detail:
        body["detail"] = detail
    body.update(extra or {})
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers keyed in lower case, as the authentication helpers take them."""
    return {k.lower(): v for k, v in headers.items()}


def collab_of(request: Request) -> ApiCollab:
    collab: ApiCollab = request.app.state.collab
    return collab


def client_ip(request: Request) -> str | None:
    """The client's address: the peer's, or the one a trusted proxy forwarded
    (``COLLAB_TRUSTED_PROXIES``, :mod:`server.ops.proxies`)."""
    peer = request.client.host if request.client is not None else None
    trusted = collab_of(request).settings.trusted_proxies
    if not trusted:
        return peer
    return client_address(peer, request.headers.get("x-forwarded-for"), trusted)


def request_scheme(request: Request) -> str:
    """``http`` or ``https`` as the client used it: the request's own, or what a trusted
    proxy says in ``X-Forwarded-Proto`` (``COLLAB_TRUSTED_PROXIES``)."""
    peer = request.client.host if request.client is not None else None
    trusted = collab_of(request).settings.trusted_proxies
    forwarded = forwarded_scheme(peer, request.headers.get("x-forwarded-proto"), trusted)
    return forwarded or request.url.scheme


async def authenticated(request: Request) -> Principal:
    """The caller, authenticated once per request (401 / 403 / 429 otherwise).

    Also checks the Origin header of browser requests and counts the request against the
    caller's REST rate limit."""
    cached = getattr(request.state, "principal", None)
    if isinstance(cached, Principal):
        return cached
    collab = collab_of(request)
    headers = lower_headers(request.headers)
    if not origin_allowed(
        headers.get("origin"), headers.get("host"), collab.settings.allowed_origins
    ):
        raise ApiError(403, "origin not allowed", f"Origin {headers.get('origin')!r}")
    principal = await collab.authn.authenticate(headers, request.url.query, ip=client_ip(request))
    await collab.limit(principal, "rest")
    request.state.principal = principal
    return principal


def document_id_of(value: object) -> str:
    """A document id from a path parameter; 400 when it is not a valid id."""
    try:
        document_id = check_document_id(value)
    except InvalidIdError as exc:
        raise ApiError(400, "invalid document id", str(exc)) from exc
    if is_reserved_id(document_id):
        raise ApiError(400, "invalid document id", "ids starting with '__' are reserved")
    return document_id


async def require(request: Request, document_id: str, right: Right) -> tuple[Principal, Right]:
    """Authenticate and check the caller has ``right`` on the document.

    A caller who may not even view it gets 404 (its existence is not disclosed); one who
    may view it but lacks ``right`` gets 403. Returns the principal and its actual right.
    """
    principal = await authenticated(request)
    collab = collab_of(request)
    if not principal.may_open(document_id):
        raise ApiError(403, "forbidden", "the token is scoped to other documents")
    actual = await collab.access.right(principal.subject, document_id)
    if actual >= right:
        return principal, actual
    if actual < Right.VIEW:
        error = ApiError(404, "document not found", f"no document {document_id!r}")
    else:
        error = ApiError(
            403,
            "forbidden",
            f"this needs the {right.label} right on the document; you have {actual.label}",
        )
    if request.method not in ("GET", "HEAD"):
        # A refused attempt to change something is part of the record.
        audit(
            request,
            principal,
            "denied",
            "business_document",
            document_id,
            {"method": request.method, "path": request.url.path, "needs": right.label},
            error=error.detail,
        )
    raise error


async def require_permission(request: Request, permission: str) -> Principal:
    """Authenticate and check the caller's role holds ``permission`` (``users:manage``...,
    :data:`server.identity.roles.PERMISSIONS`); 403 otherwise (the refusal of a change is
    audited)."""
    principal = await authenticated(request)
    if await collab_of(request).access.allows(principal.subject, permission):
        return principal
    detail = f"this needs the {permission} permission, which the {principal.role} role lacks"
    if request.method not in ("GET", "HEAD"):
        audit(
            request,
            principal,
            "denied",
            permission.partition(":")[0],
            None,
            {"method": request.method, "path": request.url.path, "needs": permission},
            error=detail,
        )
    raise ApiError(403, "forbidden", detail)


async def read_json(request: Request, model: type[M]) -> M:
    """The request body as ``model``: 415 unless JSON, 413 past 1 MiB, 400 for malformed
    JSON, 422 for JSON nested deeper than ``MAX_JSON_DEPTH`` (checked before parsing: no
    recursion) and with the field errors when it does not fit the model (unknown fields
    too)."""
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported media type", "send the body as application/json")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, "body too large", f"at most {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise ApiError(413, "body too large", f"at most {MAX_BODY_BYTES} bytes")
    try:
        data = parse_json(bytes(body), max_bytes=MAX_BODY_BYTES)
    except MalformedMessage as exc:
        kind = classify(exc)  # nested too deep: 422; not JSON: 400
        title = "malformed JSON" if kind.http_status == 400 else kind.title
        raise ApiError(kind.http_status, title, str(exc)) from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_body(exc) from exc


def validation_problem(exc: ValidationError) -> ApiError:
    """The 422 problem for a body that does not fit its model, every field error listed."""
    found = problem(invalid_body(exc))
    return ApiError(found.status, found.title, found.detail, extra=found.extra)


_TRUE: Final = frozenset({"1", "true", "yes"})
_FALSE: Final = frozenset({"", "0", "false", "no"})


def check_params(
    request: Request, allowed: frozenset[str], repeatable: frozenset[str] = frozenset()
) -> None:
    """400 for an unknown query parameter (``token`` is always allowed: it authenticates),
    or a repeated one that takes a single value."""
    names = set(request.query_params.keys())
    unknown = names - allowed - {"token"}
    if unknown:
        raise ApiError(400, "unknown query parameter", ", ".join(sorted(unknown)))
    for name in names - repeatable:
        if len(request.query_params.getlist(name)) > 1:
            raise ApiError(400, "invalid query parameter", f"{name} is given more than once")


def query_flag(request: Request, name: str) -> bool:
    """A boolean query parameter (1/0, true/false, yes/no; absent: false); 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ApiError(400, "invalid query parameter", f"{name} must be 1 or 0")


def query_moment(request: Request, name: str) -> datetime | None:
    """An ISO 8601 time with its time zone (absent: None); 400 otherwise."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "invalid query parameter", f"{name} must be ISO 8601") from None
    if moment.tzinfo is None:
        raise ApiError(400, "invalid query parameter", f"{name} needs a time zone")
    return moment


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; 400 otherwise."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "invalid query parameter", f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, "invalid query parameter", f"{name} must be in {low}..{high}")
    return value


def audit(
    request: Request,
    principal: Principal,
    action: str,
    resource_type: str,
    resource_id: str | None = None,
    changes: Any = None,
    *,
    error: str | None = None,
) -> None:
    """Queue an audit entry for a mutating action (never blocks)."""
    collab_of(request).audit.record(
        principal.context.entry(action, resource_type, resource_id, changes, error=error)
    )


def access_logged(
    request: Request,
    principal: Principal,
    document_id: str,
    access_type: str,
    sensitivity: str | None,
) -> None:
    """Queue a data-access entry (a read or an export of a document)."""
    collab_of(request).audit.access(principal.context.access(document_id, access_type, sensitivity))


def exception_handlers() -> dict[
    Any, Callable[[Request, Exception], Coroutine[Any, Any, Response]]
]:
    """Starlette exception handlers mapping our errors to problem+json: :class:`ApiError`
    as it says, every type of :data:`server.errors.TABLE` through
    :func:`server.errors.problem` (the one table the sockets use too)."""

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        counters.refused_with(exc.status, exc.title, exc.detail)
        if exc.status >= 500:
            # The detail sent is generic; the cause (a driver's text) is logged here.
            log.error("%s %s: %s (%r)", request.method, request.url.path, exc, exc.__cause__)
        return problem_response(
            exc.status, exc.title, exc.detail, headers=exc.headers, extra=exc.extra
        )

    async def mapped(request: Request, exc: Exception) -> Response:
        found = problem(exc)
        counters.refused(exc)
        if isinstance(exc, UnavailableError):
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        elif found.status >= 500:
            log.error("%s %s: %s (%r)", request.method, request.url.path, exc, exc.__cause__)
        return problem_response(
            found.status, found.title, found.detail, headers=found.headers, extra=found.extra
        )

    async def http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem_response(exc.status_code, exc.detail or "error", headers=exc.headers)

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("%s %s: unexpected error", request.method, request.url.path)
        return problem_response(500, "internal error")

    handlers: dict[Any, Callable[[Request, Exception], Coroutine[Any, Any, Response]]] = (
        dict.fromkeys(mapped_types(), mapped)
    )
    handlers.update({ApiError: api_error, HTTPException: http, Exception: unexpected})
    return handlers


def new_id() -> str:
    """A fresh document id (32 hex characters: valid as a room id)."""
    return uuid.uuid4().hex
