"""Projects (``projects``) and their linked business documents.

:meth:`ProjectService.with_documents` is the schema's "project with all linked documents"
(``cms-schema.md`` section 4.1): one ``$lookup`` on MongoDB, the equivalent join on SQLite
(:class:`~persistence.content.cms_ports.CmsQueries`), then only the documents the caller may
view (their rights computed from the joined records and one read of the caller's grants),
without their content unless asked. A link to a document that no longer exists stays in
``linkedDocuments`` and is reported as missing; one the caller may not view is counted, not
shown. :meth:`ProjectService.linking` is the reverse: the projects that link a document.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Final

from persistence.content.ports import Page
from server.cms.service import CmsPorts, CmsService, Listing
from server.cms.tables import DOCUMENTS, KINDS, PROJECTS
from server.errors import NotFoundError
from server.identity.authentication import Principal
from server.identity.rights import Right

HEAVY: Final = ("content", "revisions")


class ProjectService(CmsService):
    """Projects (see the module docstring)."""

    def __init__(self, ports: CmsPorts) -> None:
        super().__init__(ports, KINDS[PROJECTS])

    async def with_documents(
        self, actor: Principal, project_id: str, *, content: bool
    ) -> dict[str, Any]:
        """``{"project", "documents", "missingDocuments", "hiddenDocuments"}``."""
        await self.fetch(actor, project_id, Right.VIEW)
        found = await self.ports.queries.lookup(
            PROJECTS,
            project_id,
            "linkedDocuments",
            DOCUMENTS,
            exclude=("revisions",) if content else HEAVY,
        )
        if found is None:  # deleted between the two reads
            raise NotFoundError(f"no project {project_id!r}", what="project")
        project, documents = found
        rights = await self.ports.access.document_rights(actor.subject, documents)
        shown = [
            d for d in documents if rights.get(str(d.get("documentId")), Right.NONE) >= Right.VIEW
        ]
        present = {d.get("documentId") for d in documents}
        linked = project.get("linkedDocuments")
        missing = [
            doc_id
            for doc_id in (linked if isinstance(linked, list) else [])
            if doc_id not in present
        ]
        self.accessed(actor, project_id)
        if content:
            for document in shown:
                self.ports.audit.access(
                    actor.context.access(
                        str(document["documentId"]), "read", _sensitivity(document)
                    )
                )
        return {
            "project": project,
            "documents": shown,
            "missingDocuments": list(dict.fromkeys(missing)),
            "hiddenDocuments": len(documents) - len(shown),
        }

    async def linking(self, actor: Principal, document_id: str, listing: Listing) -> Page:
        """A page of the projects the actor may view that link the document."""
        query = self.query(listing, await self.visible(actor))
        return await self.ports.content.find(
            PROJECTS, replace(query, holds={"linkedDocuments": document_id})
        )


def _sensitivity(record: dict[str, Any]) -> str | None:
    value = record.get("sensitivity")
    return value if isinstance(value, str) else None
