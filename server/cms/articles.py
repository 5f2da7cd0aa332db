"""Knowledge articles (``knowledge_articles``): unique slugs, publish / unpublish, views
counted without a database write per view, likes once per user.

* The slug is given (lower-case letters, digits and dashes) or made from the title, made
  unique with ``-2``, ``-3``...; a slug taken by another article is 409 (the store's unique
  index decides a race).
* ``publish`` (edit right) moves a draft to ``published`` and stamps ``publishedDate``;
  ``unpublish`` moves it back to ``draft``. DELETE archives.
* Views: a read of a published article by someone other than its author counts one view in
  the coordinator's ``stats:`` counters (:class:`ViewCounter`: Redis in service mode, in
  process on the embedded default), written to the store in one ``$inc`` per article every
  ``interval`` seconds (and at shutdown): no database write per view. Reads show the
  stored count (views of the last seconds appear at the next flush).
* Likes: ``likedBy`` holds who liked it; ``like`` / ``unlike`` change it and ``likes``
  together, atomically and only once per user.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from persistence.content.ports import Query
from persistence.errors import StorageError
from server.cms.service import CmsPorts, CmsService, now_ms
from server.cms.tables import ARTICLES, KINDS
from server.documents.slugs import slugify
from server.errors import ConflictError, InvalidError, NotFoundError
from server.identity.authentication import Principal
from server.identity.rights import Right

log = logging.getLogger(__name__)

SLUG: Final = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
HIDDEN: Final = ("likedBy",)
VIEWS: Final = "article_views"
FLUSHED: Final = "article_views_flushed"


class ViewCounter:
    """Views per article, counted in the coordinator's ``stats:article_views:{bucket}``
    counters and flushed to the store in batches (module docstring).

    A bucket is ``interval`` seconds. Embedded (``shared`` False: the in-process
    coordinator, one node), a flush writes every bucket this node counted into and takes
    what it wrote back off the counters, so a view counted meanwhile waits for the next
    flush. Shared (Redis: several nodes count into the same buckets), a flush writes the
    buckets that are over, each by the one node that claims it first (an increment of
    ``stats:article_views_flushed:{bucket}`` that returns 1); the last ``LOOKBACK`` buckets
    are looked at, so what a stopped node counted is written by the others.
    """

    LOOKBACK: Final = 60

    def __init__(
        self,
        ports: CmsPorts,
        interval: float = 5.0,
        *,
        shared: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ports = ports
        self._interval = interval
        self._shared = shared
        self._clock = clock
        self._counted: set[int] = set()
        self._next = self._bucket() - self.LOOKBACK
        self._stop = asyncio.Event()

    def _bucket(self) -> int:
        return int(self._clock() // self._interval)

    async def count(self, article_id: str) -> None:
        """One view (a counter increment: no write to the content store)."""
        bucket = self._bucket()
        try:
            await self._ports.stats.incr(VIEWS, str(bucket), article_id)
        except (StorageError, ValueError) as exc:
            log.warning("article %s: a view was not counted: %s", article_id, exc)
            return
        self._counted.add(bucket)

    async def flush(self) -> int:
        """Write the counted views (one increment per article and bucket); returns how many
        views were written."""
        if not self._shared:
            buckets = sorted(self._counted)
            self._counted.clear()
            return sum([await self._write(bucket, take_back=True) for bucket in buckets])
        current = self._bucket()
        written = 0
        for bucket in range(self._next, current):
            claim = await self._ports.stats.incr(FLUSHED, str(bucket), "claim")
            if claim == 1:
                written += await self._write(bucket, take_back=False)
        self._next = max(self._next, current)
        return written

    async def _write(self, bucket: int, *, take_back: bool) -> int:
        stats = self._ports.stats
        written = 0
        for article_id, views in (await stats.get(VIEWS, str(bucket))).items():
            if views <= 0:
                continue
            try:
                await self._ports.queries.increment(ARTICLES, article_id, {"views": views})
            except StorageError as exc:
                log.warning("article %s: %d views not written yet: %s", article_id, views, exc)
                self._counted.add(bucket)
                continue
            if take_back:
                await stats.incr(VIEWS, str(bucket), article_id, -views)
            written += views
        return written

    async def run(self) -> None:
        """Flush every ``interval`` seconds until :meth:`stop`, then once more."""
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            try:
                await self.flush()
            except StorageError as exc:
                log.warning("article views not flushed: %s", exc)

    def stop(self) -> None:
        self._stop.set()


class ArticleService(CmsService):
    """Knowledge articles (see the module docstring)."""

    def __init__(self, ports: CmsPorts, views: ViewCounter) -> None:
        super().__init__(ports, KINDS[ARTICLES])
        self.views = views

    async def _slug_owner(self, slug: str) -> str | None:
        page = await self.ports.content.find(ARTICLES, Query(filters={"slug": slug}, limit=1))
        return str(page.items[0]["articleId"]) if page.items else None

    def _check_slug(self, slug: object) -> str:
        if not isinstance(slug, str) or not SLUG.fullmatch(slug) or len(slug) > 200:
            raise InvalidError("lower-case letters, digits and single dashes", field="slug")
        return slug

    async def before_create(self, actor: Principal, record: dict[str, Any]) -> None:
        if "slug" in record:
            slug = self._check_slug(record["slug"])
            if await self._slug_owner(slug) is not None:
                raise ConflictError(f"slug {slug!r} is used by another article", title="slug taken")
        else:
            base = slugify(str(record.get("title") or ""), "article")
            record["slug"] = await self._free_slug(base)
        record.update(views=0, shares=0, likes=0, likedBy=[])

    async def _free_slug(self, base: str) -> str:
        for n in range(1, 50):
            candidate = base if n == 1 else f"{base[:110]}-{n}"
            if await self._slug_owner(candidate) is None:
                return candidate
        return f"{base[:100]}-{uuid.uuid4().hex[:8]}"

    async def before_update(
        self, actor: Principal, record: Mapping[str, Any], changes: dict[str, Any]
    ) -> None:
        if "slug" in changes:
            slug = self._check_slug(changes["slug"])
            owner = await self._slug_owner(slug)
            if owner not in (None, record.get("articleId")):
                raise ConflictError(f"slug {slug!r} is used by another article", title="slug taken")

    async def read(self, actor: Principal, record_id: str) -> dict[str, Any]:
        record = await super().read(actor, record_id)
        if record.get("status") == "published" and record.get("author") != actor.user_id:
            await self.views.count(record_id)
        return self.shown(record)

    def shown(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The record as served (``views`` as last flushed)."""
        return dict(record)

    async def by_slug(self, actor: Principal, slug: str) -> dict[str, Any]:
        owner = await self._slug_owner(self._check_slug(slug))
        if owner is None:
            raise NotFoundError(f"no article with slug {slug!r}", what="knowledge article")
        return await self.read(actor, owner)

    async def publish(
        self, actor: Principal, article_id: str, *, published: bool
    ) -> dict[str, Any]:
        async with self.lock(article_id):
            record = await self.fetch(actor, article_id, Right.EDIT)
            current = record.get("status")
            source, target = ("draft", "published") if published else ("published", "draft")
            if current == target:
                return self.shown(record)
            if current != source:
                raise ConflictError(
                    f"a {current} article cannot be {'published' if published else 'unpublished'}",
                    title="invalid status transition",
                    extra={"currentStatus": current},
                )
            fields: dict[str, Any] = {"status": target}
            if published:
                fields["publishedDate"] = now_ms()
            stored = await self.set_fields(actor, article_id, fields, "status_change")
        return self.shown(stored)

    async def like(self, actor: Principal, article_id: str, *, liked: bool) -> dict[str, Any]:
        """Like (or unlike) as the actor: idempotent; returns ``{"likes", "likedByMe"}``."""
        await self.fetch(actor, article_id, Right.VIEW)
        queries = self.ports.queries
        move = queries.add_member if liked else queries.remove_member
        changed = await move(ARTICLES, article_id, "likedBy", actor.user_id, "likes")
        record = await self.fetch(actor, article_id, Right.VIEW)
        if changed:
            self.audit(actor, "update", article_id, {"op": "like" if liked else "unlike"})
        likes = record.get("likes")
        return {"likes": likes if isinstance(likes, int) else 0, "likedByMe": liked}
