"""The web editor, served on the API's origin (``docs/web.md``).

* ``GET /``, ``/d/{documentId}``, ``/d/{documentId}/{sectionId}``: the single page
  (``index.html``), never cached (it names the current assets) and with a strict
  Content-Security-Policy and ``Referrer-Policy: no-referrer`` (a sign-in link carries a
  token in its query until the page trades it for the session cookie and drops it).
* ``GET /static/...``: the built assets. Their names carry a hash of their content, so they
  are cached for a year as immutable.

The assets are built from ``web/`` by ``node web/build.mjs`` into ``server/web/static`` and
committed, so serving the editor needs Python only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from crdt.ids import is_valid_document_id, is_valid_section_id

STATIC_DIR: Final = Path(__file__).resolve().parent.parent / "web" / "static"
IMMUTABLE: Final = "public, max-age=31536000, immutable"
PAGE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self' {sockets}; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'self'; object-src 'none'"
)


class AssetFiles(StaticFiles):
    """Static files with long-lived cache headers (the names are content hashes)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code == 200:
            response.headers["Cache-Control"] = IMMUTABLE
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def page_html() -> str | None:
    index = STATIC_DIR / "index.html"
    return index.read_text(encoding="utf-8") if index.is_file() else None


def web_routes() -> list[BaseRoute]:
    """The editor's routes, at the root of the app."""
    html = page_html()

    async def page(request: Request) -> Response:
        document_id = request.path_params.get("document_id")
        section_id = request.path_params.get("section_id")
        if (document_id is not None and not is_valid_document_id(document_id)) or (
            section_id is not None and not is_valid_section_id(section_id)
        ):
            return Response("Not Found\n", status_code=404, media_type="text/plain")
        if html is None:
            return Response(
                "The web editor is not built: run `node web/build.mjs`.\n",
                status_code=503,
                media_type="text/plain",
            )
        host = request.headers.get("host", "")
        secure = request.url.scheme in {"https", "wss"}
        sockets = f"{'wss' if secure else 'ws'}://{host}" if host else ""
        headers = {**PAGE_HEADERS, "Content-Security-Policy": CSP.format(sockets=sockets)}
        return HTMLResponse(html, headers=headers)

    return [
        Route("/", page, methods=["GET", "HEAD"]),
        Route("/d/{document_id}", page, methods=["GET", "HEAD"]),
        Route("/d/{document_id}/{section_id}", page, methods=["GET", "HEAD"]),
        Mount("/static", app=AssetFiles(directory=STATIC_DIR, check_dir=False), name="static"),
    ]
