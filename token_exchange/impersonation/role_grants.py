"""Who may grant, change or withdraw an impersonator role: pure, keyword-only decisions.

Two rules, for every admin form that touches an ``ImpersonatorGrant`` (its own page, the roles
inline on a user's page):

1. **Four eyes.** Nobody grants, changes or withdraws an impersonator role of their own,
   superusers included: a second person does it. A staff user with ``add_impersonatorgrant``
   alone could otherwise make themselves *IAM Admin Impersonator*.
2. **Not wider than your own.** A role is *within* one the grantor holds when

   - its kind is the same or narrower: an admin impersonator (who may act as administrators
     too) covers an end-user impersonator, never the reverse; and
   - its scope is the same or narrower: an instance-wide role covers any organization's, an
     organization's role covers only that organization's. An instance-wide role is wider than
     every organization's, and a role in an organization the grantor holds no role for is
     wider than anything the grantor holds.

   A role not within any of the grantor's is *wider*. Only superusers and holders of
   ``token_exchange.grant_any_impersonator_role`` grant wider roles. Changing or deleting a
   grant needs the same right over the grant as it was (and, for a change, as it becomes):
   an organization's support lead cannot withdraw the instance administrator's role either.

Unknown role names are wider than everything (fail closed). The facts (the grantor's own roles,
whether they are a superuser or hold the permission) are gathered by the admin.
"""

from __future__ import annotations

from collections.abc import Iterable

from token_exchange.constants import ADMIN_IMPERSONATOR, END_USER_IMPERSONATOR
from token_exchange.policy import Role

# Each role and the roles it covers (itself included).
_COVERS: dict[str, frozenset[str]] = {
    ADMIN_IMPERSONATOR: frozenset({ADMIN_IMPERSONATOR, END_USER_IMPERSONATOR}),
    END_USER_IMPERSONATOR: frozenset({END_USER_IMPERSONATOR}),
}

SELF_GRANT = "self_grant"
WIDER_THAN_OWN = "wider_than_own"


def _organization(value: object) -> str | None:
    # Primary keys arrive as int from the database and as str from a form: compare as text.
    return None if value is None else str(value)


def is_within(role: Role, *, held: Role) -> bool:
    """Is ``role`` the same as or narrower than ``held``, in kind and in scope?"""
    if role.role not in _COVERS.get(held.role, frozenset()):
        return False
    return held.organization is None or _organization(held.organization) == _organization(role.organization)


def is_wider(role: Role, *, held: Iterable[Role]) -> bool:
    """Is ``role`` within none of the ``held`` roles?"""
    return not any(is_within(role, held=own) for own in held)


def grant_refusal(
    *,
    grantor_id: str,
    grantee_id: str | None,
    role: Role,
    grantor_roles: Iterable[Role],
    may_grant_any: bool,
) -> str | None:
    """``None`` if the grantor may grant (or change, or withdraw) ``role`` of ``grantee_id``;
    else the reason code: ``self_grant`` or ``wider_than_own``.

    ``may_grant_any``: the grantor is a superuser or holds ``grant_any_impersonator_role``; it
    never lifts the four-eyes rule. ``grantee_id`` is ``None`` for a user not saved yet (never
    the grantor).
    """
    if grantee_id is not None and str(grantee_id) == str(grantor_id):
        return SELF_GRANT
    if may_grant_any:
        return None
    if is_wider(role, held=grantor_roles):
        return WIDER_THAN_OWN
    return None


def may_grant(
    *,
    grantor_id: str,
    grantee_id: str | None,
    role: Role,
    grantor_roles: Iterable[Role],
    may_grant_any: bool,
) -> bool:
    return (
        grant_refusal(
            grantor_id=grantor_id,
            grantee_id=grantee_id,
            role=role,
            grantor_roles=grantor_roles,
            may_grant_any=may_grant_any,
        )
        is None
    )
