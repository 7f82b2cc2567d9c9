"""Hypothesis settings shared by the fuzz tests: bounded in CI, thousands of examples with
KERSPEC_FUZZ=long (docs/security.md)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "kerspec-ci",
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "kerspec-long", parent=settings.get_profile("kerspec-ci"), max_examples=5000
)
FUZZ = settings.get_profile(
    "kerspec-long" if os.environ.get("KERSPEC_FUZZ") == "long" else "kerspec-ci"
)
