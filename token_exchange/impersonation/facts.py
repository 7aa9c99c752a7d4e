"""The facts about users that the impersonation rules in ``policy`` decide on.

This module is the only one that asks the database who is an admin, which organizations a
user belongs to and which grants an actor holds. ``impersonation_decision`` gathers them (with
the facts about an admin-started session) for every entry point and asks ``policy`` once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import CharField, IntegerField, Q, QuerySet, Value

from token_exchange.conf import token_exchange_settings
from token_exchange.db.lookups import PreparedQuery, unique_row
from token_exchange.models import ImpersonatorGrant
from token_exchange.policy import Link, Party, Role, actor_chain

# In the facts' one query, which table a row comes from.
_GRANT, _MEMBERSHIP = 0, 1


def _memberships(user: Any) -> QuerySet[Any]:
    """The rows of the user-to-group table: the groups' primary keys without joining auth_group."""
    return get_user_model().groups.through._default_manager.filter(user=user.pk)


def user_groups(user: Any) -> Iterable[Any]:
    """Default ``USER_ORGANIZATIONS``: the primary keys of the user's ``auth`` groups."""
    return list(_memberships(user).values_list("group_id", flat=True))


def is_admin_subject(user: Any) -> bool:
    """Default ``IS_ADMIN_SUBJECT``: staff, superusers and anyone holding an impersonator grant."""
    if user.is_staff or user.is_superuser:
        return True
    return ImpersonatorGrant.objects.filter(user=user).exists()


def _groups_are_organizations() -> bool:
    """Are a grant's organizations the user's groups (the default ``ORGANIZATION_MODEL``)? Only then
    do both tables' keys share a column type, and the UNION ALL below a column."""
    organization = ImpersonatorGrant._meta.get_field("organization").related_model
    groups = get_user_model()._meta.get_field("groups").related_model
    return organization is groups


def _grants(actor: Any, subject: Any) -> QuerySet[Any]:
    return (
        ImpersonatorGrant.objects.filter(Q(user=actor) | Q(user=subject))
        .annotate(source=Value(_GRANT, output_field=IntegerField()))
        .values_list("source", "user_id", "role", "organization_id")
        .order_by()  # a compound statement's parts have no ORDER BY
    )


def _grants_and_groups(actor: Any, subject: Any) -> QuerySet[Any]:
    through: Any = get_user_model().groups.through
    memberships = (
        through._default_manager.filter(user=subject)
        .annotate(
            source=Value(_MEMBERSHIP, output_field=IntegerField()),
            role=Value("", output_field=CharField()),
        )
        .values_list("source", "user_id", "role", "group_id")
        .order_by()
    )
    return _grants(actor, subject).union(memberships, all=True)


def _user_keys() -> list[Any]:
    pk = get_user_model()._meta.pk
    return [pk, pk]


# Compiled once per connection (building the UNION costs more than PostgreSQL takes to run it).
_GRANTS = PreparedQuery(_grants, _user_keys, model=lambda: ImpersonatorGrant)
_GRANTS_AND_GROUPS = PreparedQuery(_grants_and_groups, _user_keys, model=lambda: ImpersonatorGrant)


def _facts(actor: Any, subject: Any) -> tuple[dict[Any, tuple[Role, ...]], list[Any] | None]:
    """Both users' impersonator grants by user primary key and, with the default
    ``USER_ORGANIZATIONS``, the subject's groups: one query (a UNION ALL of the two tables).

    The groups are ``None`` when a site's own ``USER_ORGANIZATIONS`` decides them, or when the
    organizations are another model than the user's groups (another key type, too).
    """
    read_groups = token_exchange_settings.USER_ORGANIZATIONS is user_groups and _groups_are_organizations()
    rows = (_GRANTS_AND_GROUPS if read_groups else _GRANTS).rows(actor.pk, subject.pk)
    roles: dict[Any, list[Role]] = {}
    groups: list[Any] = []
    for source, user_id, role, organization in rows:
        if source == _MEMBERSHIP:
            groups.append(organization)
        else:
            roles.setdefault(user_id, []).append(Role(role=role, organization=organization))
    return {user_id: tuple(held) for user_id, held in roles.items()}, groups if read_groups else None


def actor_party(user: Any) -> Party:
    return Party(id=str(user.pk), is_active=user.is_active, is_superuser=user.is_superuser)


def subject_party(
    user: Any, *, holds_grant: bool | None = None, groups: Iterable[Any] | None = None
) -> Party:
    """The subject's facts. ``holds_grant``, when the caller already read the subject's grants,
    spares the default ``IS_ADMIN_SUBJECT`` its query (a custom one is always called); ``groups``,
    read by the caller for the default ``USER_ORGANIZATIONS``, spares that one its query."""
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
        organizations=frozenset(
            token_exchange_settings.USER_ORGANIZATIONS(user) if groups is None else groups
        ),
    )


def chain(
    links: Iterable[tuple[bool, Any]], *, subject: Any, known: Iterable[Any] = ()
) -> tuple[Party, tuple[Link, ...]]:
    """The facts about ``subject`` and each actor of a chain: ``links`` are ``(trusted_issuer,
    actor primary key)``, the current actor first; ``known`` are users already read (the actor
    token's user, a session's actor), which are not read again.

    One query per actor with the defaults (its grants, the subject's grants and groups, at once),
    one more for an actor not ``known``. Reading stops at a link the rules refuse without it: an
    untrusted issuer, a user that no longer exists.
    """
    User = get_user_model()
    users = {str(user.pk): user for user in known}
    party = Party(id=str(subject.pk), is_active=subject.is_active, is_superuser=subject.is_superuser)
    found: list[Link] = []
    for trusted_issuer, pk in links:
        if not trusted_issuer:
            found.append(Link(trusted_issuer=False))
            break
        actor = users.get(str(pk))
        if actor is None and isinstance(pk, str):
            try:
                actor = unique_row(User._default_manager.filter(pk=pk))
            except (ValidationError, ValueError, TypeError):  # no primary key of this user model
                actor = None
        if actor is None:
            found.append(Link(trusted_issuer=True))
            break
        grants, groups = _facts(actor, subject)
        if not found:
            party = subject_party(subject, holds_grant=bool(grants.get(subject.pk)), groups=groups)
        found.append(Link(trusted_issuer=True, actor=actor_party(actor), roles=grants.get(actor.pk, ())))
    return party, tuple(found)


def act_links(act: dict[str, Any] | None, *, issuer: str) -> list[tuple[bool, Any]]:
    """The ``(trusted_issuer, actor primary key)`` of every actor an ``act`` claim names."""
    return [(link.get("iss") == issuer, link.get("sub")) for link in actor_chain(act)]
