"""The SLO histograms: a batch of freshness observations counts as one observe each."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from mesh.observability.slo import FRESHNESS_BUCKETS, _observe_all

AMOUNTS = st.lists(
    st.floats(min_value=0, allow_nan=False) | st.sampled_from(FRESHNESS_BUCKETS), max_size=60
)


def _samples(registry: CollectorRegistry) -> list[tuple[Any, ...]]:
    return [
        (s.name, s.labels, s.value, s.exemplar and (s.exemplar.labels, s.exemplar.value))
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    ]


@given(AMOUNTS, st.sampled_from([None, {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"}]))
def test_observing_a_batch_equals_observing_each(amounts: list[float], exemplar: Any) -> None:
    registries = CollectorRegistry(), CollectorRegistry()
    one, batch = (
        Histogram("fresh", "d", ["stage"], buckets=FRESHNESS_BUCKETS, registry=r).labels("x")
        for r in registries
    )
    for amount in amounts:
        one.observe(amount, exemplar)
    _observe_all(batch, amounts, exemplar)
    expected, got = (_samples(r) for r in registries)
    assert [s[:2] for s in got] == [s[:2] for s in expected]
    assert [s[3] for s in got] == [s[3] for s in expected]  # the same exemplars
    for (*_, want, _e), (*_, have, _g) in zip(expected, got, strict=True):
        assert have == want or abs(have - want) <= 1e-9 * abs(want)  # sums: another order
