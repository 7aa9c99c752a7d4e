"""Gathers the facts the impersonation rules in ``policy`` decide on.

``policy.impersonation_refusal`` is pure; this module is the only one that asks the database
who is an admin, which organizations a user belongs to and which grants an actor holds. The
grant calls it for an exchange with an actor token, the validator for every refresh of an
impersonated token, and the admin (later) to decide whether to show "Impersonate".
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model

from .conf import token_exchange_settings
from .lookups import PreparedLookup, unique_row
from .models import ImpersonatorGrant
from .policy import Party, Role, actor_chain, impersonation_refusal

_GRANTS = PreparedLookup(lambda: ImpersonatorGrant.objects.all(), "user")
# The rows of the user-to-group table: the groups' primary keys without joining auth_group.
_MEMBERSHIPS = PreparedLookup(lambda: get_user_model().groups.through.objects.all(), "user")


def user_groups(user: Any) -> Iterable[Any]:
    """Default ``USER_ORGANIZATIONS``: the primary keys of the user's ``auth`` groups."""
    return [membership.group_id for membership in _MEMBERSHIPS.rows(user.pk)]


def is_admin_subject(user: Any) -> bool:
    """Default ``IS_ADMIN_SUBJECT``: staff, superusers and anyone holding an impersonator grant."""
    if user.is_staff or user.is_superuser:
        return True
    return ImpersonatorGrant.objects.filter(user=user).exists()


def _grants(*users: Any) -> dict[Any, tuple[Role, ...]]:
    """The impersonator grants of several users, in one query, by user primary key."""
    grants: dict[Any, list[Role]] = {}
    for row in _GRANTS.rows(*(user.pk for user in users)):
        grants.setdefault(row.user_id, []).append(Role(role=row.role, organization=row.organization_id))
    return {user_id: tuple(roles) for user_id, roles in grants.items()}


def actor_party(user: Any) -> Party:
    return Party(id=str(user.pk), is_active=user.is_active, is_superuser=user.is_superuser)


def subject_party(user: Any, *, holds_grant: bool | None = None) -> Party:
    """The subject's facts. ``holds_grant``, when the caller already read the subject's grants,
    spares the default ``IS_ADMIN_SUBJECT`` its query (a custom one is always called)."""
    is_admin_check = token_exchange_settings.IS_ADMIN_SUBJECT
    if is_admin_check is is_admin_subject and holds_grant is not None:
        is_admin = user.is_staff or user.is_superuser or holds_grant
    else:
        is_admin = bool(is_admin_check(user))
    return Party(
        id=str(user.pk),
        is_active=user.is_active,
        is_superuser=user.is_superuser,
        is_admin=is_admin,
        organizations=frozenset(token_exchange_settings.USER_ORGANIZATIONS(user)),
    )


def refusal(*, allowed: bool, actor: Any, subject: Any) -> str | None:
    """Why ``actor`` may not impersonate ``subject`` now, or ``None`` if they may.

    Two queries with the defaults: both users' grants at once, and the subject's organizations.
    """
    grants = _grants(actor, subject)
    return impersonation_refusal(
        allowed=allowed,
        actor=actor_party(actor),
        subject=subject_party(subject, holds_grant=bool(grants.get(subject.pk))),
        actor_roles=grants.get(actor.pk, ()),
    )


def recheck(*, allowed: bool, act: dict[str, Any], subject: Any, issuer: str) -> str | None:
    """Re-decide a token's ``act`` chain: every actor it names must still be allowed.

    Used when an impersonated token is refreshed: the switch may have been turned off, a grant
    withdrawn, the actor or the customer deactivated since the token was issued.
    """
    if not allowed:
        return "impersonation_disabled"
    User = get_user_model()
    for link in actor_chain(act):
        if link.get("iss") != issuer:
            return "foreign_actor"
        actor = unique_row(User._default_manager.filter(pk=str(link.get("sub"))))
        if actor is None:
            return "actor_deleted"
        reason = refusal(allowed=allowed, actor=actor, subject=subject)
        if reason is not None:
            return reason
    return None
