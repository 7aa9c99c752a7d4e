"""The audit list with a million rows, on PostgreSQL: every page staff would open stays fast,
and no query counts or scans the whole table."""

from __future__ import annotations

import time
from urllib.parse import urlencode

import pytest
from django.db import connections, router
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from token_exchange.models import AuditEvent

from .conftest import make_app

ROWS = 1_000_000
# Issue 7's target for the audit list is 0.5 s; this leaves room for a busy two-core CI machine.
BUDGET_SECONDS = 1.0

# Where the audit and token tables are: "default", or the database a router sends them to.
connection = connections[router.db_for_write(AuditEvent)]

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="the million-row table is a PostgreSQL test"
    ),
]


@pytest.fixture
def million_events(django_user_model, support, end_user):
    portal = make_app("portal")
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {AuditEvent._meta.db_table}
                (event_type, created_at, actor_id, subject_id, application_id, payload)
            SELECT (ARRAY['user.impersonated', 'token.exchanged', 'token.exchange_refused'])[1 + i %% 3],
                   now() - i * interval '30 seconds',
                   CASE WHEN i %% 3 = 0 THEN %s END,
                   %s,
                   CASE WHEN i %% 2 = 0 THEN %s END,
                   '{{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange"}}'::jsonb
            FROM generate_series(1, %s) AS i
            """,
            [support.pk, end_user.pk, portal.pk, ROWS],
        )
        cursor.execute(f"ANALYZE {AuditEvent._meta.db_table}")
    return portal


def test_audit_list_with_a_million_rows(million_events, django_user_model, capsys):
    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    browser = Client()
    browser.force_login(root)
    this_month = timezone.localtime()
    pages = {
        "newest first": "",
        "by type": "event_type__exact=user.impersonated",
        "by application": f"application__id__exact={million_events.pk}",
        "search actor": "q=support",
        "search subject": "q=end-user",
        "past 7 days": urlencode(
            {"created_at__gte": str(this_month.replace(hour=0, minute=0, second=0, microsecond=0))}
        ),
        "year": f"created_at__year={this_month.year}",
        "month": f"created_at__year={this_month.year}&created_at__month={this_month.month}",
        "page 50": "p=50",
    }
    browser.get("/admin/token_exchange/auditevent/")  # warm the connection and templates
    timings = {}
    for name, query in pages.items():
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            response = browser.get(f"/admin/token_exchange/auditevent/?{query}")
            timings[name] = time.perf_counter() - started
        assert response.status_code == 200, name
        assert len(response.context["cl"].result_list) > 0, name
        for sql in (query["sql"] for query in queries.captured_queries):
            # Counts only over a LIMITed subquery; DISTINCT over dates never.
            if "COUNT(" in sql.upper() and "auditevent" in sql:
                assert "LIMIT" in sql.upper(), (name, sql)
            assert "DISTINCT" not in sql.upper() or "auditevent" not in sql, (name, sql)
    with capsys.disabled():
        print(
            "\naudit list, 1,000,000 rows:", ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
        )
    assert max(timings.values()) < BUDGET_SECONDS, timings
