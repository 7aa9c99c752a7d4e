"""Revoking what was issued: the one place that deletes codes, access and ID tokens and marks
refresh tokens revoked for a set of ``ExchangedToken`` records.

An admin-started impersonation that ends revokes everything issued under it; an authorization
that ends (``lineage``: a login, an actor's or a subject's) revokes everything exchanged from it.
Call inside the transaction that ends the session or the authorization.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)


def revoke_issued(**records: Any) -> dict[str, int]:
    """Delete the codes, access and ID tokens whose ``ExchangedToken`` matches ``records`` (lookups
    on the ``ExchangedToken`` model, e.g. ``impersonation=session`` or ``pk__in=<subquery>``), and
    revoke the matching refresh tokens; return the counts by kind."""
    under = {f"exchanged__{key}": value for key, value in records.items()}
    Grant = get_grant_model()
    revoked = {
        "authorization_codes": Grant.objects.filter(**under).delete()[1].get(Grant._meta.label, 0),
        "refresh_tokens": get_refresh_token_model()
        .objects.filter(revoked__isnull=True, **under)
        .update(revoked=timezone.now()),
    }
    AccessToken = get_access_token_model()
    IDToken = get_id_token_model()
    revoked["access_tokens"] = AccessToken.objects.filter(**under).count()
    revoked["id_tokens"] = IDToken.objects.filter(**under).count()
    AccessToken.objects.filter(**under).delete()
    IDToken.objects.filter(**under).delete()
    return revoked
