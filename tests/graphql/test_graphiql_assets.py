"""The GraphiQL page's vendored files are exactly what npm installed from the lockfile, the
wheel ships every file of the page, and the page loads nothing but them.

``make install`` runs ``npm ci`` in ``tooling/graphiql/`` and copies the files
(``python -m mesh_tooling.graphiql``); the copies are committed, so a bumped
``package.json``/``package-lock.json`` whose files were not copied and committed fails here.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

from mesh_tooling.graphiql import NPM_DIR, problems

from mesh.graphql.graphiql import STATIC, VENDORED, load_page

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PINS = {"react": "18.3.1", "react-dom": "18.3.1"}


def test_the_vendored_files_are_what_npm_installed() -> None:
    assert problems() == []


def test_the_packages_are_pinned_exactly_in_the_lockfile() -> None:
    pins = json.loads((NPM_DIR / "package.json").read_text())["dependencies"]
    locked = json.loads((NPM_DIR / "package-lock.json").read_text())["packages"]
    assert locked[""]["dependencies"] == pins
    for package in {v.package for v in VENDORED}:
        assert re.fullmatch(r"\d+\.\d+\.\d+", pins[package]), (package, pins[package])
        assert locked[f"node_modules/{package}"]["version"] == pins[package]
        assert locked[f"node_modules/{package}"]["integrity"].startswith("sha512-")
    assert {p: pins[p] for p in PINS} == PINS
    assert pins["graphiql"].startswith("3.")  # the last major with a browser (UMD) build


def test_the_wheel_ships_every_file_of_the_page() -> None:
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["mesh"]
    package = PROJECT_ROOT / "mesh"
    files = [p.relative_to(package).as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert files
    unshipped = [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)]
    assert unshipped == []


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside <script> and <style>."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.inline: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in and data.strip():
            self.inline.append(data)


def test_the_page_loads_only_its_own_files_each_with_its_integrity() -> None:
    page = load_page("/graphiql/")
    html = page.html.decode()
    parser = _Tags()
    parser.feed(html)
    assert parser.inline == []  # no inline script or style: the CSP would refuse them
    assert not [t for t, attrs in parser.tags if "style" in attrs or t == "style"]
    assert not [t for t, attrs in parser.tags if any(a.startswith("on") for a in attrs)]
    loaded = [
        (attrs.get("src") or attrs.get("href"), attrs.get("integrity"))
        for tag, attrs in parser.tags
        if tag == "script" or (tag == "link" and attrs.get("rel") == "stylesheet")
    ]
    assert sorted(str(url) for url, _ in loaded) == sorted(page.assets)  # each once
    for url, integrity in loaded:
        body = page.assets[str(url)].body
        assert integrity == "sha384-" + base64.b64encode(hashlib.sha384(body).digest()).decode()
    assert "http:" not in html
    assert "https:" not in html
    scripts = [str(attrs["src"]).rsplit("/", 1)[1] for tag, attrs in parser.tags if tag == "script"]
    # GraphiQL's build needs React and ReactDOM loaded; the page's script starts GraphiQL.
    assert scripts == [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "dictamesh-graphiql.js",
    ]
