"""The worker refuses a stream runtime version it was not tested with, saying which it was."""

from __future__ import annotations

from importlib import metadata

import pytest

from mesh.errors import ConfigError
from mesh.runtime import versions


def test_the_installed_versions_are_the_tested_ones() -> None:
    versions.check_runtime_versions()


def test_an_untested_faust_is_refused_naming_the_supported_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        versions, "version", lambda p: "0.16.0" if p == "faust-streaming" else metadata.version(p)
    )
    with pytest.raises(ConfigError, match=r"faust-streaming 0\.16\.0 is installed.*0\.15\.3"):
        versions.check_runtime_versions()
