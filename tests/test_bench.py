"""``make bench`` itself, in miniature: every case succeeds through the WSGI handler, its figures
are complete, the scale mode's SQL fills the tables on this database too, each case's floor is
replayed, the targets are printed, and the HTTP mode serves through gunicorn (PostgreSQL)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from oauth2_provider.models import get_access_token_model

from bench import cases, floor, measure, over_http, scale, targets
from bench.__main__ import _table, add_floor
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


def test_the_floor_replays_each_case_and_leaves_no_rows_behind():
    world = cases.build()
    measured = [case for case in world.cases if case.rounds_divisor == 1]  # not the PBKDF2 one
    driver = measure.Driver()
    expected = {case.name: measure.count_queries(driver, case, times=1) for case in measured}
    tokens = get_access_token_model().objects.count()
    floors = floor.Floor(driver, measured)  # as make bench does: sampled after each request
    timed = measure.run(driver, measured, rounds=2, warmup=1, each=floors.sample)
    figures = floors.figures()
    assert list(figures) == list(expected)
    assert {row["floor_samples"] for row in figures.values()} == {2}
    add_floor(timed, figures)
    assert "x floor" in _table("Small database", timed)
    for name, row in figures.items():
        assert timed[name]["ratio_to_floor"] > 0
        # BEGIN and COMMIT are in Django's query log (Django 5.2), so the two counts agree.
        assert row["statements"] == expected[name], row["sql"]
        assert row["begin"] == row["commit"] == 1, row["sql"]
        assert row["replay_ms"] > 0
        assert row["floor_ms"] == pytest.approx(row["replay_ms"] + row["signing_ms"], abs=0.002)
    assert [figures[name]["signatures"] for name in expected] == [0, 0, 2, 2, 2]
    assert [figures[name]["verifications"] for name in expected] == [0, 0, 0, 0, 1]
    assert get_access_token_model()._meta.db_table in figures["client_credentials"]["inserts_into"]
    # Each case captured once to find its tables; what came after (the captures replayed, the
    # timed requests, the replays) is gone again.
    assert get_access_token_model().objects.count() == tokens + len(measured)
    assert floor.run(driver, measured[:2], rounds=1)["exchange"]["floor_samples"] == 1


def test_the_targets_are_printed_whether_they_hold_or_not():
    rows = {
        "client_credentials": {"statements": 6, "ratio_to_baseline": 1.0, "ratio_to_floor": 1.9},
        "exchange": {"statements": 6, "ratio_to_baseline": 1.41, "ratio_to_floor": 2.0},
        "impersonation": {"statements": 10, "ratio_to_baseline": 2.0, "ratio_to_floor": 2.5},
        "impersonation_pbkdf2_secret": {"statements": 10, "ratio_to_baseline": 60, "ratio_to_floor": 90},
    }
    checked = targets.check(rows)
    assert checked[0].as_json() == {"target": "exchange ≤ 6 statements", "measured": "6", "holds": True}
    lines = [target.line() for target in checked]
    assert lines == [
        "target: exchange ≤ 6 statements (6) holds",
        "target: impersonation ≤ 9 statements (10) misses",
        "target: exchange ≤ 1.4x client_credentials (1.41x) misses",
        "target: impersonation ≤ 2.0x client_credentials (2.00x) holds",
        "target: client_credentials ≤ 2.0x its floor (1.90x) holds",
        "target: exchange ≤ 2.0x its floor (2.00x) holds",
        "target: impersonation ≤ 2.0x its floor (2.50x) misses",
    ]


def test_http_mode_serves_every_case_through_gunicorn():
    """Over HTTP, through the example's gunicorn, on PostgreSQL: the rows the test commits are
    what the server's worker reads. Skipped on SQLite; the PostgreSQL run (which CI requires,
    REQUIRE_POSTGRES=1) runs it."""
    if connection.vendor != "postgresql":
        pytest.skip("HTTP mode needs PostgreSQL (make test-postgres runs it)")
    world = cases.build()
    measured = over_http.http_cases(world.cases)
    database = over_http.database_url(connection.settings_dict)
    with over_http.serving(database=database, workers=1, redis_url="") as server:
        figures = over_http.measure(server.port, measured, concurrency=[1, 2], requests=4, warmup=1)
        errors = server.errors()
    assert errors == []
    assert over_http.non_200(figures) == 0, figures
    assert list(figures) == ["1", "2"]
    for row in figures.values():
        assert list(row) == [case.name for case in measured]
        assert row["client_credentials"]["throughput_ratio_to_baseline"] == 1.0
        for figure in row.values():
            assert figure["throughput_rps"] > 0
            assert figure["p95_ms"] >= figure["p50_ms"] > 0
    assert "client_credentials" in over_http.table(figures)
