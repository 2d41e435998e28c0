"""/metrics carries the impact headline of the last monitor run, and drops unmeasured figures."""

from __future__ import annotations

from datetime import UTC, datetime

from sync.health_server import ServiceState


def _monitor(state: ServiceState, impact: dict) -> None:
    now = datetime.now(UTC)
    state.finish(
        "monitor",
        status="ok",
        started=now,
        finished=now,
        counts={"predictions": {"lead_conversion": {"drift": {}, "impact": impact}}},
    )


def test_impact_headline_in_metrics():
    state = ServiceState(started_at=datetime.now(UTC))
    _monitor(state, {"adoption_index": 1.8, "top_tier_lift": 2.9, "top_tier_within_24h": None})
    text = state.metrics()
    assert "# TYPE leadscore_impact gauge" in text
    assert 'leadscore_impact{prediction="lead_conversion",measure="adoption_index"} 1.8' in text
    assert 'measure="top_tier_within_24h"' not in text
    _monitor(state, {"adoption_index": None, "note": "no score history"})
    text = state.metrics()
    assert "leadscore_impact{" not in text and "NaN" not in text
