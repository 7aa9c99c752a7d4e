"""``make bench`` itself, in miniature: every case succeeds through the WSGI handler, its figures
are complete, and the scale mode's SQL fills the tables on this database too."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from oauth2_provider.models import get_access_token_model

from bench import cases, measure, scale
from token_exchange.models import AuditEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def pbkdf2(settings):
    """The reference client's secret is hashed by Django's PBKDF2, which the tests leave out."""
    settings.PASSWORD_HASHERS = [
        *settings.PASSWORD_HASHERS,
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]


def test_every_case_succeeds_and_is_reported():
    world = cases.build()
    figures = measure.run(measure.Driver(), world.cases, rounds=2, warmup=1)
    assert list(figures) == [case.name for case in world.cases]
    assert figures["client_credentials"]["ratio_to_baseline"] == 1.0
    assert figures["exchange"]["queries"] <= 8
    assert figures["impersonation"]["queries"] <= 12
    for row in figures.values():
        assert row["median_ms"] > 0
        assert row["p95_ms"] >= row["median_ms"]


def test_scale_mode_fills_the_tables_and_renders_the_audit_list():
    world = cases.build()
    users = get_user_model().objects.count()
    rows = scale.fill(world, users=50, access_tokens=100, audit_events=300)
    assert rows["users"] == users + 50
    assert rows["access_tokens"] >= 100
    assert rows["audit_events"] >= 300
    assert AuditEvent.objects.filter(event_type="user.impersonated").count() >= 100
    assert get_access_token_model().objects.filter(token_checksum__startswith="scale").count() == 100
    pages = {name: query for name, query in scale.AUDIT_PAGES.items() if name != "page 50"}  # 300 rows
    timings = scale.audit_admin_list(world, times=1, pages=pages)
    assert set(timings) == set(pages)
