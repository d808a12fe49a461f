"""Vendoring GraphiQL's browser build into the product; ``make install`` runs it.

``tooling/graphiql/`` pins the npm packages the GraphiQL page loads (``package.json`` and
``package-lock.json``, exact versions). After ``npm ci`` there, ``python -m
mesh_tooling.graphiql`` copies the files the page loads
(:data:`mesh.graphql.graphiql.VENDORED`) and each package's licence into
``mesh/graphql/static/vendor/``, where they are committed and shipped in the wheel (so
neither a wheel build nor the image needs node). With ``--check`` it changes nothing and
fails when the committed files are not exactly what npm installed, as
``tests/graphql/test_graphiql_assets.py`` does.

It works in a checkout only (the npm folder is not part of any distribution).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from mesh.graphql.graphiql import STATIC, VENDORED

NPM_DIR = Path(__file__).resolve().parents[1] / "graphiql"
"""``tooling/graphiql/``: the pinned npm packages (``node_modules/`` once installed)."""

VENDOR_DIR = STATIC / "vendor"


def _licence(package: str) -> str:
    return f"{package}.LICENSE"


def sources(npm_dir: Path = NPM_DIR) -> dict[str, Path]:
    """Every vendored file's name and where npm installed it."""
    modules = npm_dir / "node_modules"
    found = {v.name: modules / v.package / v.path for v in VENDORED}
    for package in {v.package for v in VENDORED}:
        found[_licence(package)] = modules / package / "LICENSE"
    return found


def npm_problems(npm_dir: Path = NPM_DIR) -> list[str]:
    """What is wrong with npm's install: missing, or not the pinned versions."""
    pins = json.loads((npm_dir / "package.json").read_text())["dependencies"]
    found: list[str] = []
    for package in sorted({v.package for v in VENDORED}):
        manifest = npm_dir / "node_modules" / package / "package.json"
        if not manifest.is_file():
            return [f"{manifest} is missing: run `npm ci --prefix {npm_dir}` (make install)"]
        installed = json.loads(manifest.read_text())["version"]
        if installed != pins.get(package):
            found.append(f"npm installed {package} {installed}, package.json pins "
                         f"{pins.get(package)}: run `npm ci --prefix {npm_dir}`")  # fmt: skip
    return found


def problems(npm_dir: Path = NPM_DIR, vendor_dir: Path = VENDOR_DIR) -> list[str]:
    """What is wrong with npm's install or the vendored copies (empty: they match)."""
    found = npm_problems(npm_dir)
    if found:
        return found
    wanted = sources(npm_dir)
    for name, source in sorted(wanted.items()):
        copy = vendor_dir / name
        if not copy.is_file():
            found.append(f"{copy} is missing")
        elif copy.read_bytes() != source.read_bytes():
            found.append(f"{copy} differs from {source}")
    if vendor_dir.is_dir():
        extra = sorted(p.name for p in vendor_dir.iterdir() if p.name not in wanted)
        found += [f"{vendor_dir / name} is not a vendored file" for name in extra]
    return found


def vendor(npm_dir: Path = NPM_DIR, vendor_dir: Path = VENDOR_DIR) -> list[str]:
    """Copy what npm installed into ``vendor_dir`` and remove what is no longer vendored;
    the names of the files changed."""
    vendor_dir.mkdir(parents=True, exist_ok=True)
    wanted = sources(npm_dir)
    changed: list[str] = []
    for name, source in sorted(wanted.items()):
        copy = vendor_dir / name
        if not copy.is_file() or copy.read_bytes() != source.read_bytes():
            shutil.copyfile(source, copy)
            changed.append(name)
    for stale in sorted(p for p in vendor_dir.iterdir() if p.name not in wanted):
        stale.unlink()
        changed.append(stale.name)
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m mesh_tooling.graphiql [--check]``."""
    parser = argparse.ArgumentParser(
        prog="python -m mesh_tooling.graphiql",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--check", action="store_true", help="change nothing; fail on a difference")
    args = parser.parse_args(argv)
    if not NPM_DIR.is_dir():
        print(f"graphiql: {NPM_DIR} is not there (a checkout is needed)", file=sys.stderr)
        return 2
    if not args.check and not npm_problems():
        changed = vendor()
        if changed:
            print(f"graphiql: updated {', '.join(changed)} in {VENDOR_DIR}: commit them")
    found = problems()
    for problem in found:
        print(f"graphiql: {problem}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
