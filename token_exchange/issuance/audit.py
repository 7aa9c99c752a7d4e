"""The only writer of ``AuditEvent`` rows, and the only sender of the app's signals.

Rows of issued tokens are written by ``minting`` inside the transaction that stores the
tokens, so a token never exists without its audit row nor the reverse. A refusal row is
written on its own, after the grant has decided to refuse. Signals go out after commit.

Payloads carry ids (user ids, client ids, token ``jti`` values), never a token.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db import router, transaction
from django.db.models import Model
from django.dispatch import Signal

from token_exchange import signals
from token_exchange.constants import GRANT_TYPE, JWT_BEARER_GRANT_TYPE, KNOWN_TOKEN_TYPES
from token_exchange.db.inserts import save_together
from token_exchange.models import AuditEvent, ExchangedToken

logger = logging.getLogger("token_exchange")

EventType = AuditEvent.EventType

_SIGNALS: dict[str, Signal] = {
    EventType.USER_IMPERSONATED: signals.user_impersonated,
    EventType.TOKEN_EXCHANGED: signals.token_exchanged,
    EventType.TOKEN_EXCHANGE_REFUSED: signals.token_exchange_refused,
    EventType.IMPERSONATION_STARTED: signals.impersonation_started,
    EventType.IMPERSONATION_ENDED: signals.impersonation_ended,
    EventType.SECURITY_SETTINGS_CHANGED: signals.security_settings_changed,
    EventType.IMPERSONATOR_GRANT_CHANGED: signals.impersonator_grant_changed,
    EventType.CLIENT_KEY_CHANGED: signals.client_key_changed,
    EventType.CLIENT_POLICY_CHANGED: signals.client_policy_changed,
    EventType.APPLICATION_CHANGED: signals.application_changed,
    EventType.USER_CHANGED: signals.user_changed,
    EventType.TOKENS_REVOKED: signals.tokens_revoked,
    EventType.TOKEN_EXCHANGE_THROTTLED: signals.token_exchange_throttled,
    EventType.TRUSTED_ISSUER_CHANGED: signals.trusted_issuer_changed,
    EventType.FEDERATED_IDENTITY_CHANGED: signals.federated_identity_changed,
}


_TYPE_PARAMETERS = frozenset({"subject_token_type", "actor_token_type", "requested_token_type"})


@dataclass
class AuditContext:
    """Who asked, from where, and what is known so far; filled in as the grant reads the request."""

    application: Any
    client_ip: str | None
    grant_type: str = GRANT_TYPE
    subject_token_type: str | None = None
    actor_token_type: str | None = None
    requested_token_type: str | None = None
    subject: Any = None  # the subject's user, once a subject token was verified
    actor: Any = None  # the actor's user, once an actor token was verified
    issuer: str | None = None
    impersonation: Any = None  # the ImpersonationSession an admin-started sign-in runs under
    act: dict[str, Any] | None = None  # the act claim of the presented (impersonated) subject token
    # A trusted issuer's subject token or assertion, once verified: {"iss", "sub"} (federation).
    external: dict[str, str] | None = None

    def note_types(self, values: Iterable[tuple[str, str]]) -> None:
        """Copy the token type identifiers of the form body; unknown strings are not kept."""
        for key, value in values:
            if key in _TYPE_PARAMETERS and value in KNOWN_TOKEN_TYPES:
                setattr(self, key, value)


def client_ip(headers: Any) -> str | None:
    """``REMOTE_ADDR`` of the request (DOT copies ``META`` into oauthlib's headers).

    Behind a proxy, set ``REMOTE_ADDR`` from a trusted ``X-Forwarded-For`` in a middleware; this
    app never trusts forwarding headers on its own.
    """
    value = (headers or {}).get("REMOTE_ADDR")
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


def _user(user: Any) -> dict[str, str]:
    return {"user_id": str(user.pk)}


def actor_column(context: AuditContext, act: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``actor`` of a row: the verified actor, else the outermost actor of ``act`` (RFC 8693
    §4.1, the one acting now) when this server issued it, so that a search for the support user
    finds every row their impersonation produced, re-exchanges and refreshes included.

    By id, without a query: the grant and the validator have re-decided that actor just before
    (``impersonation_decision`` refuses a deleted one).
    """
    if context.actor is not None:
        return {"actor": context.actor}
    act = act if act is not None else context.act
    if isinstance(act, dict) and context.issuer is not None and act.get("iss") == context.issuer:
        sub = act.get("sub")
        if isinstance(sub, str) and sub:
            return {"actor_id": sub}
    return {"actor": None}


def _base_payload(context: AuditContext) -> dict[str, Any]:
    payload: dict[str, Any] = {"grant_type": context.grant_type}
    if context.application is not None:
        payload["applicationId"] = context.application.client_id
    for key in sorted(_TYPE_PARAMETERS):
        value = getattr(context, key)
        if value is not None:
            payload[key] = value
    if context.subject is not None:
        payload["subject"] = _user(context.subject)
    if context.actor is not None:
        # ZITADEL's "User impersonated" payload shape: actor {issuer, user_id}.
        payload["actor"] = {"issuer": context.issuer, **_user(context.actor)}
    elif isinstance(context.act, dict):
        payload["actor"] = {"issuer": context.act.get("iss"), "user_id": context.act.get("sub")}
    if context.impersonation is not None:
        payload["impersonation"] = _session(context.impersonation)
    if context.external is not None:
        payload["external_subject"] = dict(context.external)
    return payload


def _session(session: Any) -> dict[str, Any]:
    return {"id": session.pk, "reason": session.reason, "expires_at": session.expires_at.isoformat()}


def _save(
    rows: list[AuditEvent],
    using: str,
    *,
    along: Sequence[ExchangedToken] = (),
    token_rows: Sequence[Model] = (),
) -> list[AuditEvent]:
    """Insert the rows in one statement, with the token records they name that are not stored
    yet (``along``) and the DOT token rows those records are about (``token_rows``, unsaved,
    in the order their foreign keys need): one round trip on PostgreSQL, and never a token or a
    record without its trail."""
    save_together(token_rows, [list(along), rows], using)
    for row in rows:
        transaction.on_commit(lambda row=row: _send(row), using=using)  # type: ignore[misc]
    return rows


def _save_alone(event: AuditEvent) -> AuditEvent:
    """Insert one row in a transaction of its own (a refusal has no token transaction to join)."""
    using = router.db_for_write(AuditEvent)
    with transaction.atomic(using=using):
        _save([event], using)
    return event


def _send(event: AuditEvent) -> None:
    for receiver, result in _SIGNALS[event.event_type].send_robust(sender=AuditEvent, event=event):
        if isinstance(result, Exception):
            logger.error(
                "Receiver %r of %s failed", receiver, event.event_type, exc_info=(type(result), result, None)
            )


def issued(
    context: AuditContext,
    *,
    tokens: Iterable[ExchangedToken],
    issued_token_type: str,
    scope: str,
    audience: Iterable[str],
    expires_in: int,
    act: dict[str, Any] | None,
    using: str,
    token_rows: Sequence[Model] = (),
) -> list[AuditEvent]:
    """``token.exchanged`` (for an exchange) and ``user.impersonated`` (when a token has ``act``).

    Call inside the transaction that stores the tokens. Records of ``tokens`` not stored yet
    (minting's) are written here, in the same statement as the audit rows, and so are the DOT
    token rows they are about (``token_rows``, not stored yet, each after the rows it points at).
    """
    tokens = list(tokens)
    payload = _base_payload(context)
    payload.update(
        issued_token_type=issued_token_type,
        scope=scope,
        audience=list(audience),
        expires_in=expires_in,
        tokens=[{"token_type": token.issued_token_type, "jti": token.jti} for token in tokens],
    )
    if act is not None:
        payload["act"] = act
        # A token that keeps the act of the token it was exchanged for names that actor.
        payload.setdefault("actor", {"issuer": act.get("iss"), "user_id": act.get("sub")})
    common = {
        "subject": context.subject,
        "application": context.application,
        "client_ip": context.client_ip,
        **actor_column(context, act),
    }
    rows = []
    if context.grant_type in (GRANT_TYPE, JWT_BEARER_GRANT_TYPE):
        rows.append(AuditEvent(event_type=EventType.TOKEN_EXCHANGED, payload=payload, **common))
    if act is not None:
        rows.append(AuditEvent(event_type=EventType.USER_IMPERSONATED, payload=payload, **common))
    return _save(rows, using, along=[token for token in tokens if token._state.adding], token_rows=token_rows)


def _session_event(event_type: str, session: Any, client_ip: str | None, **extra: Any) -> AuditEvent:
    payload: dict[str, Any] = {
        "applicationId": session.application.client_id,
        "actor": _user(session.actor),
        "subject": _user(session.subject),
        **_session(session),
        **extra,
    }
    event = AuditEvent(
        event_type=event_type,
        actor=session.actor,
        subject=session.subject,
        application=session.application,
        client_ip=client_ip,
        payload=payload,
    )
    return _save([event], router.db_for_write(AuditEvent))[0]


def impersonation_started(session: Any, *, client_ip: str | None) -> AuditEvent:
    """``impersonation.started``: who, as whom, in which application, why and until when.

    Call inside the transaction that stores the session.
    """
    return _session_event(EventType.IMPERSONATION_STARTED, session, client_ip, scope=session.scope)


def impersonation_ended(
    session: Any, *, revoked: dict[str, int], client_ip: str | None, cause: str | None = None
) -> AuditEvent:
    """``impersonation.ended``, with why (``end_reason``, and the precise ``cause`` when known:
    ``logged_out``, ``session_ended``, ``password_changed``, ...) and how many codes and tokens
    were revoked.

    Call inside the transaction that ends the session and revokes its tokens.
    """
    extra = {} if cause is None else {"cause": cause}
    return _session_event(
        EventType.IMPERSONATION_ENDED,
        session,
        client_ip,
        end_reason=session.end_reason,
        revoked=revoked,
        **extra,
    )


def security_settings_changed(
    *, user: Any, old: dict[str, Any], new: dict[str, Any], client_ip: str | None
) -> AuditEvent:
    """``security_settings.changed``: who, and the old and new value of every changed switch.

    Call inside the transaction that saves the settings.
    """
    changed = sorted(name for name in new if old.get(name) != new[name])
    event = AuditEvent(
        event_type=EventType.SECURITY_SETTINGS_CHANGED,
        actor=user,
        client_ip=client_ip,
        payload={
            "changed_by": _user(user),
            "old": {name: old.get(name) for name in changed},
            "new": {name: new[name] for name in changed},
        },
    )
    return _save([event], router.db_for_write(AuditEvent))[0]


def changed(
    event_type: str,
    *,
    user: Any,
    action: str,
    target: dict[str, Any],
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    client_ip: str | None = None,
    application: Any = None,
    subject: Any = None,
) -> AuditEvent:
    """``<model>.changed``: who (``user``, None for code outside a request) did ``action``
    (``created``, ``changed`` or ``deleted``) to ``target`` (ids naming the row), and the values
    of the changed fields before and after. The caller leaves secrets out (or reports them as
    ``"changed"``): this function writes what it is given.

    Call inside the transaction that saves the change.
    """
    event = AuditEvent(
        event_type=event_type,
        actor=user if getattr(user, "pk", None) is not None else None,
        subject=subject,
        application=application,
        client_ip=client_ip,
        payload={
            "action": action,
            "target": target,
            "changed_by": _user(user) if getattr(user, "pk", None) is not None else None,
            "before": before,
            "after": after,
        },
    )
    return _save([event], router.db_for_write(AuditEvent))[0]


def tokens_revoked(
    *,
    reason: str,
    revoked: dict[str, int],
    actor: Any = None,
    subject: Any = None,
    application: Any = None,
    client_ip: str | None = None,
    **extra: Any,
) -> AuditEvent:
    """``tokens.revoked``: tokens that ended with the authorization they descend from.

    ``reason`` is a code (``actor_token_revoked``, ``actor_deactivated``, ...), ``revoked`` the
    counts by kind. Call inside the transaction that revokes them.
    """
    event = AuditEvent(
        event_type=EventType.TOKENS_REVOKED,
        actor=actor,
        subject=subject,
        application=application,
        client_ip=client_ip,
        payload={"reason": reason, "revoked": revoked, **extra},
    )
    return _save([event], router.db_for_write(AuditEvent))[0]


def throttled(context: AuditContext, *, refusals: int, window_seconds: int) -> AuditEvent:
    """``token.exchange_throttled``: the client crossed the refusal limit; written once a window."""
    payload = _base_payload(context)
    payload.update(refusals=refusals, window_seconds=window_seconds)
    event = AuditEvent(
        event_type=EventType.TOKEN_EXCHANGE_THROTTLED,
        application=context.application,
        client_ip=context.client_ip,
        payload=payload,
    )
    return _save_alone(event)


def refused(context: AuditContext, *, reason: str, error: str, parameter: str | None = None) -> AuditEvent:
    """``token.exchange_refused`` with the reason code the client is not told, and the request
    parameter it is about (``subject_token``, ``actor_token``) when it is about one."""
    payload = _base_payload(context)
    payload.update(reason=reason, error=error)
    if parameter is not None:
        payload["parameter"] = parameter
    actor = actor_column(context)
    if "actor_id" in actor:
        # A refusal may be about exactly that actor being gone (``actor_deleted``): name them
        # only if they still exist, or the row would break its foreign key.
        User = get_user_model()
        actor = {"actor": User._default_manager.filter(pk=actor["actor_id"]).first()}
    event = AuditEvent(
        event_type=EventType.TOKEN_EXCHANGE_REFUSED,
        **actor,
        subject=context.subject,
        application=context.application,
        client_ip=context.client_ip,
        payload=payload,
    )
    return _save_alone(event)
