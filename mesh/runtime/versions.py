"""The stream runtime versions this project is tested with, checked when a worker starts.

The delivery hook (:mod:`mesh.runtime.delivery`) is faust-streaming's fetch loop with one
step changed, and the catalog store reads its RocksDB partitions directly: a different
faust-streaming may change either underneath without an error. Add a version here only
after ``make test`` and ``make soak`` pass with it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from mesh.errors import ConfigError

TESTED = {
    "faust-streaming": ("0.15.3",),
    "aiokafka": ("0.14.0",),
}


def check_runtime_versions() -> None:
    """Raise :class:`~mesh.errors.ConfigError` naming the supported versions when an
    installed stream runtime package is not one of them."""
    for package, tested in TESTED.items():
        try:
            found = version(package)
        except PackageNotFoundError:
            found = "not installed"
        if found not in tested:
            raise ConfigError(
                f"{package} {found} is installed; DictaMesh is tested with {package} "
                f"{' or '.join(tested)} only. Install a tested version "
                f"(pip install '{package}=={tested[-1]}')."
            )
