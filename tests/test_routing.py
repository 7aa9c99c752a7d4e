"""Routers, as a site with several databases writes them: the token transaction's tables stay
together (E012), and what must see the latest committed state reads where the router writes."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from token_exchange import checks
from token_exchange.impersonation import decision as impersonation_decision
from token_exchange.impersonation import sessions as impersonation_sessions
from token_exchange.models import ImpersonationSession


class AuditElsewhere:
    """Keeps the audit trail in a database of its own: what E012 refuses."""

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "audit" if model._meta.label == "token_exchange.AuditEvent" else None


def test_e012_token_tables_split_over_databases():
    access_token = get_access_token_model()._meta.label
    with override_settings(DATABASE_ROUTERS=[AuditElsewhere()]):
        [message] = checks.check_token_tables_share_a_database()
    assert message.id == "token_exchange.E012"
    assert message.msg == (
        f"token_exchange.AuditEvent is routed for writing to 'audit', but {access_token} to 'default': "
        "a token, its records and its audit row are written in one transaction, and a refused or "
        "failed issuance must leave none of them."
    )
    assert message.hint == (
        f"Route token_exchange.AuditEvent to the database of {access_token} in your DATABASE_ROUTERS "
        "(db_for_write)."
    )


def test_no_e012_when_they_share_one():
    assert checks.check_token_tables_share_a_database() == []


class ReplicaReads:
    """Reads of impersonation sessions go to a replica: here "sessions", which holds none of these
    tables, so a read of the session that should have gone to the primary fails loudly instead of
    returning a stale row. (The decision also reads the security settings and the users' grants,
    which a replica may answer like any other read.)"""

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return "sessions" if model is ImpersonationSession else "primary"

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return "sessions" if model._meta.app_label == "sessions" else "primary"


@pytest.mark.skipif("primary" not in settings.DATABASES, reason="needs tests/settings_multidb.py")
def test_the_locked_session_is_read_where_it_is_locked(support, end_user, portal):
    """Issuing under an admin-started session re-reads it under its lock: on the primary, never
    on a replica that may not have seen a Stop yet."""
    session = ImpersonationSession.objects.create(
        actor=support,
        subject=end_user,
        application=portal,
        reason="ticket",
        expires_at=timezone.now() + datetime.timedelta(minutes=10),
    )
    impersonation_sessions.end(session, reason=ImpersonationSession.EndReason.STOPPED)
    with override_settings(DATABASE_ROUTERS=[ReplicaReads()]):
        assert impersonation_decision.session_refusal(session.pk, lock=True) == "impersonation_ended"
