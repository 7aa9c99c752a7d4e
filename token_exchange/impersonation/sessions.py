"""Impersonation started from the admin: a support user's session at this server acting as a
customer in one application.

The support user stays logged in as themselves; their session only remembers which
``ImpersonationSession`` is running. While it runs, ``/o/authorize/`` issues that application's
codes for the customer, with ``act`` naming the support user (``TokenExchangeValidator``), so it
works for every client type, public single-page apps included, and no token ever travels in a
URL: the application is sent to its launch URL with ``iss`` and ``login_hint`` (OpenID Connect
Core §4, third-party initiated login) and signs in the usual way.

Who may start one is decided by the token endpoint's own impersonation decision
(``impersonation_decision``, which also asks this module about a running session). Stop,
expiry, logging out or a refusal on a later check end it, and ending revokes every code and
token issued under it: ``end`` is the one place that does both.

It lives exactly as long as the actor's browser session at this server. ``start`` records that
session's key and a digest of the actor's session auth hash (which Django derives from the
password). Every code redemption, refresh, re-exchange and use under it asks ``standing``,
which reads the session back from ``settings.SESSION_ENGINE`` through its public
``SessionStore`` API: a session that was flushed (logout, a login as someone else), expired,
deleted, or that no longer holds this impersonation for this actor, or an actor whose password
changed, refuses, and ``end_refused`` ends the impersonation and revokes its tokens. Where Django
sends a signal the end comes at once instead: ``user_logged_out``, ``user_logged_in`` (the key
the browser came with is the previous session's) and the user model's ``post_save`` (a new
password). A signed-cookies session keeps nothing at the server that could be ended, so there
admin-started impersonation is refused.

An actor runs at most one: starting another, from any browser, replaces every running one. The
scopes it may obtain are the client policy's ``admin_impersonation_scope``, recorded at start.
"""

from __future__ import annotations

import datetime
import logging
from importlib import import_module
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import SESSION_KEY as AUTH_USER_SESSION_KEY
from django.contrib.sessions.backends.signed_cookies import SessionStore as SignedCookieSessionStore
from django.core.exceptions import PermissionDenied
from django.db import router, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac
from oauth2_provider.models import (
    get_application_model,
)

from token_exchange.constants import OFFLINE_ACCESS
from token_exchange.issuance import audit, revocation
from token_exchange.models import ClientPolicy, ImpersonationSession

logger = logging.getLogger("token_exchange")

SESSION_KEY = "token_exchange_impersonation"

EndReason = ImpersonationSession.EndReason

# What ``end_refused`` records for a refusal; every other reason ends a session as REFUSED. The
# precise reason is the refusal's audit row, and the cause of the end.
_END_REASONS = {
    "impersonation_expired": EndReason.EXPIRED,
    "session_ended": EndReason.EXPIRED,
}
_AUTH_HASH_SALT = "token_exchange.impersonation_sessions.session_auth_hash"


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


def server_side_sessions() -> bool:
    """Does ``settings.SESSION_ENGINE`` keep sessions at this server?

    The signed-cookies engine keeps a session in the browser only: nothing here can tell that
    it was flushed, replaced or copied, so nothing could end an impersonation bound to it.
    """
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    return not issubclass(store_class, SignedCookieSessionStore)


def auth_hash_digest(user: Any) -> str:
    """A digest of ``user``'s session auth hash, which changes with the password.

    Django keeps the hash itself in the session, as the proof that the session's login is still
    the user's; a copy in another table would be one more place to steal it from. The digest,
    under this module's own salt, can only be compared.
    """
    return salted_hmac(_AUTH_HASH_SALT, user.get_session_auth_hash(), algorithm="sha256").hexdigest()


# The session store did not answer: this request is refused, the impersonation goes on.
SESSION_STORE_UNAVAILABLE = "session_store_unavailable"


def browser_session_refusal(session: ImpersonationSession) -> str | None:
    """Why the actor's browser session that ``session`` is bound to no longer carries it, or ``None``.

    One read of the session store (a primary-key lookup with the database engines, a cache get
    with the cache ones). ``load()``, not ``exists()``: the database engine's ``exists()`` also
    finds an expired session, ``load()`` does not, and either way an empty dict means gone (a
    session that does not decode reads empty too).

    Only when ``load()`` reads nothing, ``exists()`` tells a session that is gone from a store that
    did not answer: the cache engine's ``load()`` reads any cache error as an empty session, and a
    Redis outage must not end every running impersonation (``SESSION_STORE_UNAVAILABLE``: refused
    now, not ended).
    """
    if not session.session_key:
        # Started before sessions were bound, or by code that bypassed ``start``.
        return "session_ended"
    if not constant_time_compare(session.session_auth_hash, auth_hash_digest(session.actor)):
        return "password_changed"
    store_class = import_module(settings.SESSION_ENGINE).SessionStore
    store = store_class(session_key=session.session_key)
    try:
        data = store.load()
        if not data and store.exists(session.session_key) and _swallows_errors(store_class):
            return SESSION_STORE_UNAVAILABLE
    except Exception:  # any backend's outage reads the same: not an answer
        logger.warning("The session store did not answer for impersonation session %s", session.pk)
        return SESSION_STORE_UNAVAILABLE
    if not data:
        return "session_ended"
    actor = session.actor
    if (
        data.get(AUTH_USER_SESSION_KEY) != actor._meta.pk.value_to_string(actor)
        or data.get(SESSION_KEY) != session.pk
    ):
        return "session_changed_hands"
    return None


def _swallows_errors(store_class: type) -> bool:
    """Django's cache engine, whose ``load()`` turns a cache error into an empty session (a cache
    entry that expired is gone, so ``exists()`` after an empty ``load()`` means an error)."""
    from django.contrib.sessions.backends.cache import SessionStore as CacheStore

    return issubclass(store_class, CacheStore)


def closed(session: ImpersonationSession) -> str | None:
    """Why ``session`` is over by its own row: Stop (or another end), or its expiry."""
    if session.ended_at is not None:
        return "impersonation_ended"
    if not session.is_active():
        return "impersonation_expired"
    return None


def standing(session: ImpersonationSession) -> str | None:
    """Why ``session`` may not go on although it runs: its application is no longer launchable,
    or the browser session it lives in no longer carries it (the only fact read from the session
    store)."""
    if not launchable_applications().filter(pk=session.application_id).exists():
        return "application_not_launchable"
    return browser_session_refusal(session)


def end_refused(session: ImpersonationSession, reason: str | None) -> None:
    """The consequence of a refusal about ``session``: it ends, and everything issued under it is
    revoked, before the refusal is answered. A session store that did not answer ends nothing."""
    if reason is not None and reason != SESSION_STORE_UNAVAILABLE and session.ended_at is None:
        end(session, reason=_END_REASONS.get(reason, EndReason.REFUSED), cause=reason)


def running(pk: int, *, lock: bool = False) -> ImpersonationSession | None:
    """The session a token names by id, with its users and application; with ``lock``, its row
    locked for the caller's transaction first, as ``end`` takes it: an issuance either commits
    before the session ends (and ``end`` revokes what it issued) or sees it ended.

    The lock goes to the database the router writes to, and so does this read, so a replica can
    never answer it with a session a Stop has already ended.
    """
    sessions = ImpersonationSession.objects.select_related("actor", "subject", "application")
    if lock:
        sessions = sessions.select_for_update(of=("self",))
    return sessions.filter(pk=pk).first()


def _client_ip(request: HttpRequest | None) -> str | None:
    return audit.client_ip(request.META) if request is not None else None


def _scopes(value: str) -> list[str]:
    """Space-delimited scopes (RFC 6749 §3.3: %x20 only), each once, in order."""
    return list(dict.fromkeys(scope for scope in value.split(" ") if scope))


def _running(actor_id: Any) -> QuerySet[ImpersonationSession]:
    return ImpersonationSession.objects.select_related("actor", "subject", "application").filter(
        actor_id=actor_id, ended_at__isnull=True
    )


def begin(
    request: HttpRequest, *, subject: Any, application: Any, reason: str, seconds: int
) -> ImpersonationSession:
    """Start impersonating ``subject`` in ``application``, bound to this browser session, with the
    scopes the client policy allows; every running impersonation of the actor, in any browser,
    ends (replaced).

    Called only by ``impersonation.decision.start``, once the rule allows it (it was ``start``
    here, which checked the rule itself: the new name fails loudly in code that still calls it
    instead of silently skipping the rule); raises ``PermissionDenied`` unless the application
    is launchable.
    """
    actor: Any = request.user
    launchable = launchable_applications().filter(pk=application.pk).first()
    if launchable is None:
        raise PermissionDenied
    browser = request.session
    if browser.session_key is None:
        browser.save()  # a session that was never stored has no key yet
    session_key = browser.session_key
    if not session_key:
        raise PermissionDenied
    using = router.db_for_write(ImpersonationSession)
    with transaction.atomic(using=using):
        for running in _running(actor.pk).select_for_update(of=("self",)):
            end(running, reason=EndReason.REPLACED, cause="replaced", request=request)
        now = timezone.now()
        session = ImpersonationSession.objects.create(
            actor=actor,
            subject=subject,
            application=application,
            reason=reason,
            session_key=session_key,
            session_auth_hash=auth_hash_digest(actor),
            scope=" ".join(_scopes(launchable.token_exchange_policy.admin_impersonation_scope)),
            started_at=now,
            expires_at=now + datetime.timedelta(seconds=seconds),
        )
        audit.impersonation_started(session, client_ip=_client_ip(request))
        # Two starts committing at once do not see each other's row above; whichever commits
        # last sees both here, and the newest one is kept.
        actor_pk = actor.pk
        transaction.on_commit(lambda: _keep_newest(actor_pk), using=using)
    browser[SESSION_KEY] = session.pk
    return session


def _keep_newest(actor_id: Any) -> None:
    for older in list(_running(actor_id).order_by("-pk"))[1:]:
        end(older, reason=EndReason.REPLACED, cause="replaced")


def allowed_scope(session: ImpersonationSession, requested: str) -> str:
    """The scopes of ``requested`` that ``session`` may obtain: those recorded at its start that
    the client policy still allows (an administrator may narrow it while it runs)."""
    allowed = set(_scopes(session.scope))
    policy_scope = (
        ClientPolicy.objects.filter(application_id=session.application_id)
        .values_list("admin_impersonation_scope", flat=True)
        .first()
    )
    allowed.intersection_update(_scopes(policy_scope or ""))
    return " ".join(scope for scope in _scopes(requested) if scope in allowed)


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
    if session.session_key != session_store.session_key:
        # The data moved to another key (``cycle_key``, as ``update_session_auth_hash`` does):
        # the session it was bound to is gone, and so is the impersonation.
        end(session, reason=EndReason.REFUSED, cause="session_changed_hands", request=request)
        session_store.pop(SESSION_KEY, None)
        return None
    if not session.is_active():
        end(session, reason=EndReason.EXPIRED, cause="impersonation_expired", request=request)
        session_store.pop(SESSION_KEY, None)
        return None
    return session


def stop(request: HttpRequest) -> ImpersonationSession | None:
    """End the impersonation of this browser session (the banner's Stop)."""
    session = current(request)
    if session is not None:
        end(session, reason=EndReason.STOPPED, cause="stopped", request=request)
    if getattr(request, "session", None) is not None:
        request.session.pop(SESSION_KEY, None)
    return session


def end(
    session: ImpersonationSession,
    *,
    reason: str,
    cause: str | None = None,
    request: HttpRequest | None = None,
) -> dict[str, int]:
    """Mark ``session`` ended and revoke its codes and tokens; audited once, whoever ends it first.

    ``reason`` is the ``EndReason``; ``cause`` says precisely what happened (``"logged_out"``,
    ``"logged_in_as_another_user"``, ``"session_ended"``, ``"password_changed"``, ...).
    """
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
        audit.impersonation_ended(session, revoked=revoked, client_ip=_client_ip(request), cause=cause)
    logger.info("Impersonation session %s ended: %s (%s)", session.pk, reason, cause or reason)
    return revoked


def revoke_tokens(session: ImpersonationSession) -> dict[str, int]:
    """Delete the codes, access and ID tokens issued under ``session``; revoke its refresh tokens."""
    return revocation.revoke_issued(impersonation=session)


def refresh_allowed(session: ImpersonationSession, scope: str) -> bool:
    """May a token response under ``session`` carry a refresh token? Only with ``offline_access``
    in its scope, and in the scopes the client policy allowed it at its start (``session.scope``)."""
    return OFFLINE_ACCESS in scope.split(" ") and OFFLINE_ACCESS in session.scope.split(" ")


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
        end(session, reason=EndReason.STOPPED, cause="logged_out", request=request)


def end_on_login(sender: Any, request: HttpRequest | None = None, user: Any = None, **kwargs: Any) -> None:
    """``user_logged_in`` receiver: a login that gave the browser another session key ends what
    was bound to the key it came with.

    ``login()`` has already flushed (another user) or cycled (a login from an anonymous session)
    the session by now; the key the browser sent, in its cookie, is the previous one. One query
    on such logins only; none when the browser brought no session cookie.
    """
    browser = getattr(request, "session", None)
    if request is None or browser is None:
        return
    previous = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
    if not previous or previous == browser.session_key:
        return
    for session in ImpersonationSession.objects.select_related("actor", "subject", "application").filter(
        session_key=previous, ended_at__isnull=True
    ):
        cause = (
            "logged_in_again"
            if session.actor_id == getattr(user, "pk", None)
            else "logged_in_as_another_user"
        )
        end(session, reason=EndReason.STOPPED, cause=cause, request=request)


def end_on_password_change(
    sender: Any,
    instance: Any,
    created: bool = False,
    raw: bool = False,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    """The user model's ``post_save`` receiver: a new password ends the actor's impersonations.

    ``post_save`` rather than ``update_session_auth_hash``, which sends no signal and is not
    called when someone else (an administrator, ``changepassword``) sets the password. A save
    that names its ``update_fields`` without the password (``last_login`` at every login) costs
    nothing; any other save of a user, one indexed query. A password written around ``save()``
    (``QuerySet.update``) is caught by ``browser_session_refusal`` at the next use.
    """
    if created or raw or (update_fields is not None and "password" not in update_fields):
        return
    digest = auth_hash_digest(instance)
    for session in _running(instance.pk):
        if not constant_time_compare(session.session_auth_hash, digest):
            end(session, reason=EndReason.REFUSED, cause="password_changed")


def connect_receivers() -> None:
    """Connect this module's signal receivers (called from ``TokenExchangeConfig.ready``)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.signals import user_logged_in, user_logged_out
    from django.db.models.signals import post_save

    user_logged_out.connect(end_on_logout, dispatch_uid="token_exchange.end_on_logout")
    user_logged_in.connect(end_on_login, dispatch_uid="token_exchange.end_on_login")
    post_save.connect(
        end_on_password_change, sender=get_user_model(), dispatch_uid="token_exchange.end_on_password_change"
    )
