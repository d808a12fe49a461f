"""Saga metrics: started, finished by outcome, how long they took, failing steps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["SagaMetrics"]


class SagaMetrics:
    """The saga metrics of one worker's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter(
            "dictamesh_sagas_started_total",
            "Sagas started, by type.",
            ["saga"],
            registry=registry,
        )
        self.finished = Counter(
            "dictamesh_sagas_finished_total",
            "Sagas that ended, by type and outcome (completed, compensated, "
            "failed_compensation: its effects may be left half undone, see the runbook).",
            ["saga", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            "dictamesh_saga_duration_seconds",
            "From a saga's start to its end, by type and outcome.",
            ["saga", "outcome"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=registry,
        )
        self.step_failures = Counter(
            "dictamesh_saga_step_failures_total",
            "Failed attempts of saga steps (stage action or compensation).",
            ["saga", "step", "stage"],
            registry=registry,
        )
        self.running = Gauge(
            "dictamesh_sagas_running",
            "Sagas this worker is driving now.",
            registry=registry,
        )
        self.oversold = Counter(
            "dictamesh_saga_oversold_total",
            "Stock found below zero when a reservation was made: an edit outside the sagas "
            "(e.g. in the Directus UI) sold units they had reserved.",
            registry=registry,
        )
