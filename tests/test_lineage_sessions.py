"""An admin-started impersonation whose browser session ended without a hook reads inactive at
introspection at once (review finding 3): introspection asks the session as a refresh does, and
ends the impersonation there."""

from __future__ import annotations

import datetime

import pytest
from django.contrib.sessions.models import Session
from django.utils import timezone
from oauth2_provider.models import get_access_token_model

from token_exchange.models import ImpersonationSession

from . import test_admin_session_binding as binding
from . import test_lineage

pytestmark = pytest.mark.django_db(transaction=True)

# The admin-started impersonation of test_admin_session_binding: support signed in to the SPA.
spa = binding.spa
support_browser = binding.support_browser
signed_in = binding.signed_in
http = test_lineage.http
inspector = test_lineage.inspector


def test_an_admin_started_impersonation_whose_browser_session_expired_reads_inactive_at_once(
    http, inspector, signed_in, support_browser
):
    access_token = signed_in["tokens"]["access_token"]
    assert http.active(inspector, access_token)
    Session.objects.filter(session_key=support_browser.session_key).update(
        expire_date=timezone.now() - datetime.timedelta(seconds=1)
    )

    assert not http.active(inspector, access_token)

    session = ImpersonationSession.objects.get(pk=signed_in["session"].pk)
    assert session.ended_at is not None
    assert not get_access_token_model().objects.filter(exchanged__impersonation=session).exists()
