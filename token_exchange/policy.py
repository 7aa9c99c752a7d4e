"""Pure decisions of the token exchange grant.

Every function here takes plain values and returns a value or raises a ``Refusal`` with a
reason code; none reads the database, the request or the settings. The grant gathers the
inputs, these functions decide, and ``minting`` carries the decision out.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from token_exchange.constants import (
    ACT,
    ADMIN_IMPERSONATOR,
    END_USER_IMPERSONATOR,
    ID_TOKEN_TYPE,
    OFFLINE_ACCESS,
    OPENID,
    SUBJECT_DATA_SCOPES,
)
from token_exchange.exceptions import InvalidSubjectToken, Refusal, ScopeRefusal, TargetRefusal


def may_present(
    *,
    client_id: str,
    token_client_id: str,
    token_audience: Iterable[str],
    client_resources: Iterable[str] = (),
) -> bool:
    """A client may exchange a token issued to it, or one whose audience names it (RFC 8693 §2.1):
    by its client_id, or by a resource URI it serves (``ClientPolicy.resource_uris``)."""
    if client_id == token_client_id:
        return True
    audience = set(token_audience)
    return client_id in audience or any(resource in audience for resource in client_resources)


def resolve_scope(
    *,
    requested: frozenset[str],
    subject_scope: frozenset[str],
    client_scopes: frozenset[str],
) -> frozenset[str]:
    """The scope of the issued token: never wider than the subject token's or the client's.

    An empty request means "the subject's scope", less what the client may not hold.
    """
    if not requested:
        granted = subject_scope & client_scopes
        if not granted:
            raise ScopeRefusal("no_scope_left")
        return granted
    if not requested <= subject_scope:
        raise ScopeRefusal("scope_exceeds_subject")
    if not requested <= client_scopes:
        raise ScopeRefusal("scope_not_allowed_for_client")
    return requested


def resolve_audience(*, requested: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The audience of the issued token: exactly what was asked for, or else ``allowed``.

    Every requested ``audience`` and ``resource`` value must already be in the audience of the
    presented tokens: an exchange can narrow the audience, never widen it.
    """
    if not requested:
        return allowed
    if any(value not in allowed for value in requested):
        raise TargetRefusal("audience_exceeds_subject")
    return tuple(dict.fromkeys(requested))


def lifetime_seconds(
    *, now: datetime.datetime, default_seconds: int, not_after: datetime.datetime | None
) -> int:
    """Seconds the issued token lives: the configured lifetime, cut at the presented tokens' expiry."""
    seconds = default_seconds
    if not_after is not None:
        seconds = min(seconds, int((not_after - now).total_seconds()))
    if seconds <= 0:
        raise InvalidSubjectToken("expired_token")
    return seconds


def issues_refresh_token(*, requested_token_type: str, scope: frozenset[str]) -> bool:
    """A refresh token only with ``offline_access``, and never beside a requested ID token."""
    return OFFLINE_ACCESS in scope and requested_token_type != ID_TOKEN_TYPE


def issues_id_token(*, requested_token_type: str, scope: frozenset[str]) -> bool:
    """An ``id_token`` field with ``openid``, unless the ID token already is the ``access_token``."""
    return OPENID in scope and requested_token_type != ID_TOKEN_TYPE


# Impersonation: who may act for whom (in the spirit of django-hijack's permission checks).


@dataclass(frozen=True)
class Party:
    """What the impersonation rules know about one user: plain values, gathered beforehand."""

    id: str
    is_active: bool = True
    is_superuser: bool = False
    is_admin: bool = False  # TOKEN_EXCHANGE["IS_ADMIN_SUBJECT"]: staff, superuser, or impersonator
    organizations: frozenset[Any] = frozenset()


@dataclass(frozen=True)
class Role:
    """One ImpersonatorGrant of the actor: a role, instance-wide (``organization=None``) or not."""

    role: str
    organization: Any = None


def covers(role: Role, subject: Party) -> bool:
    """Does this grant cover the subject? Superusers are handled by ``impersonation_refusal``."""
    if role.organization is not None and role.organization not in subject.organizations:
        return False
    if role.role == ADMIN_IMPERSONATOR:
        return True
    return role.role == END_USER_IMPERSONATOR and not subject.is_admin


def impersonation_refusal(
    *, allowed: bool, actor: Party, subject: Party, actor_roles: Iterable[Role]
) -> str | None:
    """``None`` if ``actor`` may obtain tokens for ``subject``; else the reason code.

    ``allowed`` is the instance switch (``SecuritySettings.allow_impersonation``). A superuser
    can be impersonated only by a superuser holding an instance-wide admin-impersonator grant:
    an organization admin must never become the instance's owner.
    """
    if not allowed:
        return "impersonation_disabled"
    if not actor.is_active:
        return "actor_inactive"
    if not subject.is_active:
        return "subject_inactive"
    if actor.id == subject.id:
        return "actor_is_subject"
    roles = tuple(actor_roles)
    if not roles:
        return "actor_not_impersonator"
    if subject.is_superuser:
        instance_admin = any(r.role == ADMIN_IMPERSONATOR and r.organization is None for r in roles)
        return None if actor.is_superuser and instance_admin else "subject_is_superuser"
    if any(covers(role, subject) for role in roles):
        return None
    return "subject_not_covered"


@dataclass(frozen=True)
class Link:
    """One actor an ``act`` chain names (RFC 8693 §4.1), as found now."""

    trusted_issuer: bool  # the link's ``iss`` is this server
    actor: Party | None = None  # None: no such user any more
    roles: tuple[Role, ...] = ()


@dataclass(frozen=True)
class ImpersonationFacts:
    """Everything the one impersonation decision reads, gathered beforehand
    (``impersonation_decision.gather``): the same facts for every entry point."""

    allowed: bool  # SecuritySettings.allow_impersonation
    subject: Party
    chain: tuple[Link, ...]  # every actor, the current one first
    may_act: bool = True  # RFC 8693 §4.4, for an exchange with an actor token
    session_closed: str | None = None  # an admin-started session that ended or expired
    session_standing: str | None = None  # its application and browser session, read last


def impersonation_decision(facts: ImpersonationFacts) -> str | None:
    """``None`` if tokens may be issued (or renewed, or used) for ``facts.subject`` on behalf of
    every actor of the chain; else the reason code. One rule for every entry point: an exchange
    with an actor token, a re-exchange or refresh of an impersonated token, the code of an
    admin-started impersonation and the tokens issued under one."""
    if facts.session_closed is not None:
        return facts.session_closed  # final, whatever else holds
    if not facts.allowed:
        return "impersonation_disabled"
    if not facts.may_act:
        return "may_act_mismatch"
    for link in facts.chain:
        if not link.trusted_issuer:
            return "foreign_actor"
        if link.actor is None:
            return "actor_deleted"
        reason = impersonation_refusal(
            allowed=True, actor=link.actor, subject=facts.subject, actor_roles=link.roles
        )
        if reason is not None:
            return reason
    return facts.session_standing


def may_impersonate(*, allowed: bool, actor: Party, subject: Party, actor_roles: Iterable[Role]) -> bool:
    return (
        impersonation_refusal(allowed=allowed, actor=actor, subject=subject, actor_roles=actor_roles) is None
    )


def actor_chain(act: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The actors an ``act`` claim names, the current one first (RFC 8693 §4.1)."""
    chain: list[dict[str, Any]] = []
    while isinstance(act, dict):
        chain.append(act)
        act = act.get(ACT)
    return chain


def act_claim(*, issuer: str, actor_id: str, prior: dict[str, Any] | None, max_depth: int) -> dict[str, Any]:
    """The ``act`` of an impersonated token; a prior ``act`` is nested, never dropped (§4.1)."""
    act: dict[str, Any] = {"iss": issuer, "sub": actor_id}
    if prior is not None:
        if len(actor_chain(prior)) + 1 > max_depth:
            raise Refusal("act_chain_too_deep")
        act[ACT] = prior
    return act


def satisfies_may_act(*, may_act: dict[str, Any] | None, issuer: str, actor_id: str) -> bool:
    """RFC 8693 §4.4: a subject token's ``may_act`` names who may act for it; none = anyone."""
    if may_act is None:
        return True
    return may_act.get("sub") == actor_id and may_act.get("iss", issuer) == issuer


def resolve_impersonation_scope(
    *,
    requested: frozenset[str],
    subject_scope: frozenset[str],
    subject_authorizes: bool,
    actor_scope: frozenset[str],
    client_scopes: frozenset[str],
) -> frozenset[str]:
    """The scope of an impersonated token.

    An access-token subject carries the customer's own authorization: the scope stays within
    it. A subject that carries none (a user id, an ID token, a self-signed JWT) lends only
    subject-data scopes (``openid profile email``, if the client may ask for them); every
    authorization scope must come from the actor token. Omitted: the subject's, else the actor's.
    """
    if subject_authorizes:
        return resolve_scope(requested=requested, subject_scope=subject_scope, client_scopes=client_scopes)
    if not requested:
        granted = (subject_scope or actor_scope) & client_scopes
        if not granted:
            raise ScopeRefusal("no_scope_left")
        return granted
    if not requested <= client_scopes:
        raise ScopeRefusal("scope_not_allowed_for_client")
    if not (requested - SUBJECT_DATA_SCOPES) <= actor_scope:
        raise ScopeRefusal("scope_exceeds_actor")
    return requested


def resolve_impersonation_audience(
    *, requested: tuple[str, ...], subject_audience: tuple[str, ...], actor_audience: tuple[str, ...]
) -> tuple[str, ...]:
    """Within the subject and actor audiences together; omitted: the subject's, else the actor's."""
    if not requested:
        return subject_audience or actor_audience
    allowed = tuple(dict.fromkeys([*subject_audience, *actor_audience]))
    return resolve_audience(requested=requested, allowed=allowed)
