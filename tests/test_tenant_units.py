"""The pure pieces behind tenants: the token bucket, tenant settings and where
they were set, usage buckets, and the bounded tenant label."""

import pytest

from longserve.server.config import AppConfig
from longserve.server.jobs.usage import BUCKET_S, Usage
from longserve.server.monitoring.monitor import tenant_labels
from longserve.server.quotas import TokenBucket, burst_of

MODELS = {"m": {"class": "tests.slow_models:Sleeper"}}


def test_token_bucket_spends_its_burst_then_refills_at_its_rate():
    bucket = TokenBucket.full(2.0, 3, now=0.0)
    assert [bucket.take(2.0, 3, 0.0)[0] for _ in range(4)] == [True, True, True, False]
    allowed, wait_s, left = bucket.take(2.0, 3, 0.0)
    assert not allowed and wait_s == pytest.approx(0.5) and left == 0
    assert bucket.take(2.0, 3, 0.5) == (True, 0.0, 0)  # one token came back
    assert bucket.take(2.0, 3, 100.0) == (True, 0.0, 2)  # never more than the burst
    assert burst_of(0.5, None) == 1 and burst_of(2.5, None) == 3 and burst_of(1, 7) == 7


def test_a_tenants_settings_come_from_its_entry_over_defaults():
    config = AppConfig.model_validate(
        {
            "models": MODELS,
            "tenants": {"defaults": {"max_active_jobs": 5, "weight": 2}, "acme": {"max_active_jobs": 50}},
        }
    )
    acme, where = config.tenant("acme")
    assert (acme.max_active_jobs, acme.weight, acme.requests_per_s) == (50, 2, None)
    assert where == {"max_active_jobs": "tenants.acme.max_active_jobs", "weight": "tenants.defaults.weight"}
    other, where = config.tenant("key_0123abcd")
    assert other.max_active_jobs == 5 and where["max_active_jobs"] == "tenants.defaults.max_active_jobs"
    plain, where = AppConfig.model_validate({"models": MODELS}).tenant("anonymous")
    assert plain.max_active_jobs is None and plain.weight == 1 and where == {}  # no tenants: unlimited
    with pytest.raises(ValueError, match="max_active_jobs"):
        AppConfig.model_validate({"models": MODELS, "tenants": {"acme": {"max_active_jobs": 0}}})
    with pytest.raises(ValueError, match="extra"):
        AppConfig.model_validate({"models": MODELS, "tenants": {"acme": {"max_jobs": 1}}})


def test_usage_adds_up_per_tenant_and_model_within_the_window():
    usage = Usage()
    usage.add("a", "m", 0.0, jobs=1, seconds=1.5)
    usage.add("a", "m", BUCKET_S * 10, requests=2, seconds=0.25)
    usage.add("b", "m", BUCKET_S * 10, jobs=1)
    assert usage.report("a", 0.0) == {"a": {"m": {"jobs": 1, "requests": 2, "model_seconds": 1.75}}}
    assert usage.report("a", BUCKET_S * 5) == {"a": {"m": {"jobs": 0, "requests": 2, "model_seconds": 0.25}}}
    assert set(usage.report(None, 0.0)) == {"a", "b"}


def test_the_tenant_label_is_bounded_by_the_config():
    config = AppConfig.model_validate({"models": MODELS, "tenants": {"defaults": {}, "acme": {}}})
    assert tenant_labels(config) == {"acme", "anonymous"}
