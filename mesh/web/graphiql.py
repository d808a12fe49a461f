"""The GraphiQL page's files, served by the worker (:mod:`mesh.graphql.graphiql`).

``GET /graphiql/<digest>/<name>`` answers one of the page's scripts or stylesheets with its
Content-Security-Policy, ``nosniff`` and a year of immutable caching (the digest changes
with the content); any other name or digest is 404. The paths are open (the gate's
:data:`~mesh.auth.middleware.GRAPHIQL_ASSETS`): they are the same static files for everyone.
"""

from __future__ import annotations

from mesh.auth.middleware import GRAPHIQL_ASSETS
from mesh.context import MeshContext
from mesh.graphql.graphiql import PAGE_HEADERS, GraphiQLPage, load_page
from mesh.runtime.web import Request, Response, View
from mesh.web.entities import json_response


def register_graphiql_assets(context: MeshContext) -> GraphiQLPage:
    """Load the page and its files and register the view serving the files; the page.

    A missing file stops the worker here, at start, rather than serve a page that never
    starts in the browser."""
    page = load_page(GRAPHIQL_ASSETS)

    @context.app.page(GRAPHIQL_ASSETS + "{digest}/{name}")
    class GraphiQLAsset(View):
        async def get(self, request: Request, digest: str, name: str) -> Response:
            asset = page.assets.get(f"{GRAPHIQL_ASSETS}{digest}/{name}")
            if asset is None:
                missing = {"error": {"code": "not_found", "message": "no such GraphiQL file"}}
                return json_response(self, missing, status=404)
            return self.bytes(asset.body, headers=asset.headers)

    return page


def page_response(view: View, page: GraphiQLPage) -> Response:
    """The page itself, with its policy."""
    return view.bytes(page.html, headers=PAGE_HEADERS)
