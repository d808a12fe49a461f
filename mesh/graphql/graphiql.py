"""The GraphiQL page served to browsers on ``GET /graphql``, and every file it loads.

Nothing comes from a CDN. React 18 and GraphiQL 3's browser builds (:data:`VENDORED`) are
the exact files of the npm packages pinned in ``tooling/graphiql/`` (``package-lock.json``):
``make install`` runs ``npm ci`` there and copies them into ``static/vendor/``
(``python -m mesh_tooling.graphiql``), where they are committed and shipped in the wheel;
``tests/graphql/test_graphiql_assets.py`` checks the copies still match what npm installed.
The page's own script and stylesheet are ``static/dictamesh-graphiql.{js,css}``.

The worker serves each file at ``<prefix><digest>/<name>``, the digest being its content's:
a changed file gets a new URL, so the files can be cached for good while the page itself
(``no-cache``) always names the current ones. The page has no inline script or style, so
its Content-Security-Policy (:data:`CONTENT_SECURITY_POLICY`) lets it run only these files
and talk only to its own origin.

The page holds no data and needs no token; the queries it sends do. Its bar takes a bearer
token, kept in the tab's ``sessionStorage`` (never in the URL), which the fetcher sends as
``Authorization: Bearer …`` with every request; without one the worker's 401 answer is
what GraphiQL shows.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

STATIC = Path(__file__).with_name("static")
"""The page's files: its own script and stylesheet, and ``vendor/``."""


@dataclass(frozen=True)
class Vendored:
    """One file of an npm package the page loads, shipped under its own name."""

    package: str
    path: str
    """Where it is inside the package."""

    @property
    def name(self) -> str:
        """The file's name in ``static/vendor/`` and in its URL."""
        return PurePosixPath(self.path).name


VENDORED = (
    Vendored("react", "umd/react.production.min.js"),
    Vendored("react-dom", "umd/react-dom.production.min.js"),
    Vendored("graphiql", "graphiql.min.js"),
    Vendored("graphiql", "graphiql.min.css"),
)
"""In the order the page loads them (GraphiQL's build expects React and ReactDOM first)."""

OWN = ("dictamesh-graphiql.css", "dictamesh-graphiql.js")
"""The page's own files in ``static/``; the script starts GraphiQL, so it comes last."""

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        # The one loosening GraphiQL 3 needs: its dialogs (settings, shortcuts) lock the
        # page's scrolling with a <style> element they add (react-remove-scroll), whose
        # content varies and whose nonce cannot be set from outside the bundle. Inline
        # style attributes stay refused, and with img/font/connect limited to this origin
        # an injected stylesheet could not send anything anywhere.
        "style-src-elem 'self' 'unsafe-inline'",
        "connect-src 'self'",
        # GraphiQL's stylesheet embeds its fonts and a few images as data: URLs.
        "img-src 'self' data:",
        "font-src 'self' data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
"""The page's and its files' policy: nothing but the worker's own files and endpoint."""

CONTENT_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}

_COMMON_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
PAGE_HEADERS = {
    **_COMMON_HEADERS,
    "Content-Type": "text/html; charset=utf-8",
    # Always asked again: it names the assets of the version the worker runs.
    "Cache-Control": "no-cache",
}
"""The page's response headers."""

IMMUTABLE = "public, max-age=31536000, immutable"
"""An asset's URL changes with its content, so a cached copy never goes stale."""


@dataclass(frozen=True)
class Asset:
    """One file the page loads, as the worker serves it."""

    name: str
    body: bytes
    url: str
    """``<prefix><digest>/<name>``."""
    integrity: str
    """Its Subresource Integrity value (``sha384-…``)."""

    @property
    def headers(self) -> dict[str, str]:
        """Its response headers."""
        content_type = CONTENT_TYPES[PurePosixPath(self.name).suffix]
        return {**_COMMON_HEADERS, "Content-Type": content_type, "Cache-Control": IMMUTABLE}


@dataclass(frozen=True)
class GraphiQLPage:
    """The page and the files it loads, by URL."""

    html: bytes
    assets: Mapping[str, Asset]


_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>DictaMesh GraphiQL</title>
{styles}
</head>
<body>
  <form id="dictamesh-token" autocomplete="off">
    <label for="dictamesh-token-input">Bearer token</label>
    <input id="dictamesh-token-input" name="token" type="password" autocomplete="off"
      spellcheck="false" placeholder="from `mesh token`, or the one `mesh dev` printed">
    <button type="submit">Use</button>
    <span id="dictamesh-token-state" role="status"></span>
  </form>
  <div id="graphiql">Loading GraphiQL…</div>
  <noscript>GraphiQL needs JavaScript.</noscript>
{scripts}
</body>
</html>
"""


def _asset(prefix: str, path: Path) -> Asset:
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    integrity = "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
    return Asset(path.name, body, f"{prefix}{digest}/{path.name}", integrity)


def load_page(prefix: str, static: Path = STATIC) -> GraphiQLPage:
    """The page with its files served under ``prefix`` (e.g. ``/graphiql/``).

    Raises :class:`FileNotFoundError` naming a missing file: an install without them would
    serve a page that never starts, so the worker refuses to start instead.
    """
    paths = [static / "vendor" / v.name for v in VENDORED] + [static / name for name in OWN]
    assets = [_asset(prefix, path) for path in paths]
    styles = [a for a in assets if a.name.endswith(".css")]
    scripts = [a for a in assets if a.name.endswith(".js")]
    links = [f'  <link rel="stylesheet" href="{a.url}" integrity="{a.integrity}">' for a in styles]
    tags = [f'  <script src="{a.url}" integrity="{a.integrity}"></script>' for a in scripts]
    html = _PAGE.format(styles="\n".join(links), scripts="\n".join(tags))
    return GraphiQLPage(html.encode(), {a.url: a for a in assets})
