"""Hypothesis settings for the property tests that post to the app."""

from __future__ import annotations

from hypothesis import HealthCheck, settings


def fuzz(max_examples: int) -> settings:
    """No deadline (a request may wait for the database), no example database kept
    between runs, and the test's app fixtures shared by its examples."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
