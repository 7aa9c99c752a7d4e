"""Impersonation started from the admin: a support user's session at this server acting as a
customer in one application.

The support user stays logged in as themselves; their session only remembers which
``ImpersonationSession`` is running. While it runs, ``/o/authorize/`` issues that application's
codes for the customer, with ``act`` naming the support user (``TokenExchangeValidator``), so it
works for every client type, public single-page apps included, and no token ever travels in a
URL: the application is sent to its launch URL with ``iss`` and ``login_hint`` (OpenID Connect
Core §4, third-party initiated login) and signs in the usual way.

Who may start one is decided by the same functions as the token endpoint's impersonation
(``impersonation.refusal``). Stop, expiry, logging out or a refusal on a later check end it, and
ending revokes every code and token issued under it.
"""

from __future__ import annotations

import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.core.exceptions import PermissionDenied
from django.db import router, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from oauth2_provider.models import (
    get_application_model,
)

from . import audit, impersonation, revocation
from .constants import OFFLINE_ACCESS
from .models import ImpersonationSession, SecuritySettings

SESSION_KEY = "token_exchange_impersonation"

EndReason = ImpersonationSession.EndReason


def launchable_applications() -> QuerySet[Any]:
    """Applications whose client policy allows admin-started impersonation and names a launch URL."""
    applications: QuerySet[Any] = (
        get_application_model()
        .objects.filter(
            token_exchange_policy__admin_impersonation_enabled=True,
            token_exchange_policy__launch_url__gt="",
        )
        .select_related("token_exchange_policy")
        .order_by("name", "pk")
    )
    return applications


def refusal(*, actor: Any, subject: Any) -> str | None:
    """Why ``actor`` may not impersonate ``subject`` from the admin now, or ``None``.

    The token endpoint's rules, unchanged: the instance switch, the actor's grants, both users
    active, admins only for admin impersonators, nobody as themselves.
    """
    if actor is None or not getattr(actor, "is_authenticated", False):
        return "not_authenticated"
    return impersonation.refusal(
        allowed=SecuritySettings.load().allow_impersonation, actor=actor, subject=subject
    )


def session_refusal(session: ImpersonationSession) -> str | None:
    """Why codes and tokens of ``session`` may no longer be issued or refreshed, or ``None``."""
    if session.ended_at is not None:
        return "impersonation_ended"
    if not session.is_active():
        return "impersonation_expired"
    if not launchable_applications().filter(pk=session.application_id).exists():
        return "application_not_launchable"
    return refusal(actor=session.actor, subject=session.subject)


def enforce(session: ImpersonationSession, *, refused: str | None = None) -> str | None:
    """``session_refusal`` (or the caller's own reason, ``refused``); a session that may not go on
    is ended here, and everything issued under it revoked, before the refusal is answered."""
    reason = refused or session_refusal(session)
    if reason is not None and session.ended_at is None:
        end(session, reason=EndReason.EXPIRED if reason == "impersonation_expired" else EndReason.REFUSED)
    return reason


def enforce_by_id(pk: int) -> str | None:
    """``enforce`` for a token that names its session by id (a deleted session refuses)."""
    session = (
        ImpersonationSession.objects.select_related("actor", "subject", "application").filter(pk=pk).first()
    )
    return "impersonation_ended" if session is None else enforce(session)


def locked_refusal(pk: int) -> str | None:
    """Lock the session's row for the caller's transaction, then ``session_refusal``.

    Issuing under a session takes this lock first, as ``end`` does: an issuance either commits
    before the session ends (and ``end`` revokes what it issued) or sees it ended.
    """
    # One query, locking the session's row only (not its users'): a lock goes to the database
    # the router writes to, and so does this read, so a replica can never answer it with a
    # session a Stop has already ended.
    session = (
        ImpersonationSession.objects.select_for_update(of=("self",))
        .select_related("actor", "subject")
        .filter(pk=pk)
        .first()
    )
    return "impersonation_ended" if session is None else session_refusal(session)


def _client_ip(request: HttpRequest | None) -> str | None:
    return audit.client_ip(request.META) if request is not None else None


def start(
    request: HttpRequest, *, subject: Any, application: Any, reason: str, seconds: int
) -> ImpersonationSession:
    """Start impersonating ``subject`` in ``application``, replacing any running impersonation.

    Raises ``PermissionDenied`` unless the rules allow it and the application is launchable.
    """
    if refusal(actor=request.user, subject=subject) is not None:
        raise PermissionDenied
    if not launchable_applications().filter(pk=application.pk).exists():
        raise PermissionDenied
    previous = current(request)
    with transaction.atomic(using=router.db_for_write(ImpersonationSession)):
        if previous is not None:
            end(previous, reason=EndReason.REPLACED, request=request)
        now = timezone.now()
        session = ImpersonationSession.objects.create(
            actor=request.user,  # type: ignore[misc]  # authenticated: refusal() said so
            subject=subject,
            application=application,
            reason=reason,
            started_at=now,
            expires_at=now + datetime.timedelta(seconds=seconds),
        )
        audit.impersonation_started(session, client_ip=_client_ip(request))
    request.session[SESSION_KEY] = session.pk
    return session


def current(request: HttpRequest) -> ImpersonationSession | None:
    """The impersonation running in this browser session, ending it first if it has expired."""
    session_store = getattr(request, "session", None)
    if session_store is None or SESSION_KEY not in session_store:
        return None
    session = (
        ImpersonationSession.objects.select_related("actor", "subject", "application")
        .filter(pk=session_store.get(SESSION_KEY))
        .first()
    )
    user_pk = getattr(getattr(request, "user", None), "pk", None)
    if session is None or session.actor_id != user_pk or session.ended_at is not None:
        session_store.pop(SESSION_KEY, None)
        return None
    if not session.is_active():
        end(session, reason=EndReason.EXPIRED, request=request)
        session_store.pop(SESSION_KEY, None)
        return None
    return session


def stop(request: HttpRequest) -> ImpersonationSession | None:
    """End the impersonation of this browser session (the banner's Stop)."""
    session = current(request)
    if session is not None:
        end(session, reason=EndReason.STOPPED, request=request)
    if getattr(request, "session", None) is not None:
        request.session.pop(SESSION_KEY, None)
    return session


def end(session: ImpersonationSession, *, reason: str, request: HttpRequest | None = None) -> dict[str, int]:
    """Mark ``session`` ended and revoke its codes and tokens; audited once, whoever ends it first."""
    with transaction.atomic(using=router.db_for_write(ImpersonationSession)):
        locked = ImpersonationSession.objects.select_for_update().filter(pk=session.pk).first()
        if locked is None or locked.ended_at is not None:
            return {}
        locked.ended_at = timezone.now()
        locked.end_reason = reason
        locked.save(update_fields=["ended_at", "end_reason"])
        revoked = revoke_tokens(locked)
        # The caller's object, with the select_related users and application, says the same now.
        session.ended_at, session.end_reason = locked.ended_at, locked.end_reason
        audit.impersonation_ended(session, revoked=revoked, client_ip=_client_ip(request))
    return revoked


def revoke_tokens(session: ImpersonationSession) -> dict[str, int]:
    """Delete the codes, access and ID tokens issued under ``session``; revoke its refresh tokens."""
    return revocation.revoke_issued(impersonation=session)


def refresh_allowed(session: ImpersonationSession, scope: str) -> bool:
    """May a token response under ``session`` carry a refresh token? Only with ``offline_access``
    in its scope, which the client policy's ``admin_impersonation_scope`` must allow."""
    return OFFLINE_ACCESS in scope.split(" ")


def launch_url(session: ImpersonationSession, *, issuer: str) -> str:
    """The application's launch URL with ``iss`` and ``login_hint`` (the customer's ``sub``)."""
    parts = urlsplit(str(session.application.token_exchange_policy.launch_url))
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("iss", issuer)]
    query.append(("login_hint", str(session.subject.pk)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def end_on_logout(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_out`` receiver: logging out of this server stops the impersonation too."""
    if request is None or getattr(request, "session", None) is None:
        return
    pk = request.session.get(SESSION_KEY)
    if pk is None:
        return
    session = (
        ImpersonationSession.objects.select_related("actor", "subject", "application").filter(pk=pk).first()
    )
    if session is not None:
        end(session, reason=EndReason.STOPPED, request=request)


def connect_receivers() -> None:
    """Connect this module's signal receivers (called from ``TokenExchangeConfig.ready``)."""
    from django.contrib.auth.signals import user_logged_out

    user_logged_out.connect(end_on_logout, dispatch_uid="token_exchange.end_on_logout")
