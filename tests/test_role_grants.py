"""Who may grant which impersonator role: the pure rule of ``role_grants``, as a truth table."""

from __future__ import annotations

import pytest

from token_exchange.constants import ADMIN_IMPERSONATOR as ADMIN
from token_exchange.constants import END_USER_IMPERSONATOR as END_USER
from token_exchange.impersonation.role_grants import (
    SELF_GRANT,
    WIDER_THAN_OWN,
    grant_refusal,
    is_wider,
    may_grant,
)
from token_exchange.policy import Role

ACME, GLOBEX = 1, 2

IAM_ADMIN = Role(ADMIN)  # instance-wide admin impersonator
IAM_END_USER = Role(END_USER)
ACME_ADMIN = Role(ADMIN, ACME)
ACME_END_USER = Role(END_USER, ACME)
GLOBEX_END_USER = Role(END_USER, GLOBEX)


@pytest.mark.parametrize(
    ("held", "granted", "wider"),
    [
        # Nothing held: every role is wider.
        ((), ACME_END_USER, True),
        ((), IAM_END_USER, True),
        # The same role is not wider.
        ((ACME_END_USER,), ACME_END_USER, False),
        ((IAM_ADMIN,), IAM_ADMIN, False),
        # Kind: admin impersonator covers end-user impersonator, never the reverse.
        ((ACME_ADMIN,), ACME_END_USER, False),
        ((ACME_END_USER,), ACME_ADMIN, True),
        ((IAM_END_USER,), IAM_ADMIN, True),
        # Scope: instance-wide covers every organization, an organization only itself.
        ((IAM_END_USER,), ACME_END_USER, False),
        ((IAM_ADMIN,), GLOBEX_END_USER, False),
        ((ACME_END_USER,), IAM_END_USER, True),
        ((ACME_ADMIN,), IAM_END_USER, True),
        # An organization the grantor holds no role in.
        ((ACME_END_USER,), GLOBEX_END_USER, True),
        ((ACME_ADMIN,), Role(ADMIN, GLOBEX), True),
        # Both dimensions must be covered by one held role, not by two together.
        ((ACME_ADMIN, IAM_END_USER), IAM_ADMIN, True),
        ((ACME_ADMIN, IAM_END_USER), Role(ADMIN, ACME), False),
        ((ACME_ADMIN, IAM_END_USER), GLOBEX_END_USER, False),
        # Organization ids from a form (text) and from the database (int) are the same.
        ((Role(END_USER, "1"),), ACME_END_USER, False),
        # An unknown role is wider than anything; an unknown held role covers nothing.
        ((IAM_ADMIN,), Role("owner"), True),
        ((Role("owner"),), ACME_END_USER, True),
    ],
)
def test_wider_than_own(held, granted, wider):
    assert is_wider(granted, held=held) is wider


GRANTOR = "7"
OTHER = "8"


@pytest.mark.parametrize(
    ("grantee", "role", "held", "may_grant_any", "refusal"),
    [
        # Four eyes: nobody grants a role of their own, whatever they hold or may.
        (GRANTOR, ACME_END_USER, (ACME_ADMIN,), False, SELF_GRANT),
        (GRANTOR, IAM_ADMIN, (), True, SELF_GRANT),  # a superuser or holder of the permission
        (GRANTOR, ACME_END_USER, (IAM_ADMIN,), True, SELF_GRANT),
        # A role within the grantor's own: granted.
        (OTHER, ACME_END_USER, (ACME_END_USER,), False, None),
        (OTHER, ACME_END_USER, (IAM_ADMIN,), False, None),
        # A wider role: only with the permission (or as a superuser).
        (OTHER, IAM_ADMIN, (ACME_ADMIN,), False, WIDER_THAN_OWN),
        (OTHER, IAM_ADMIN, (ACME_ADMIN,), True, None),
        (OTHER, ACME_END_USER, (), False, WIDER_THAN_OWN),
        (OTHER, ACME_END_USER, (), True, None),
        # A user not saved yet is never the grantor.
        (None, ACME_END_USER, (ACME_END_USER,), False, None),
        (None, IAM_ADMIN, (ACME_END_USER,), False, WIDER_THAN_OWN),
    ],
)
def test_grant_refusal(grantee, role, held, may_grant_any, refusal):
    facts = {
        "grantor_id": GRANTOR,
        "grantee_id": grantee,
        "role": role,
        "grantor_roles": held,
        "may_grant_any": may_grant_any,
    }
    assert grant_refusal(**facts) == refusal
    assert may_grant(**facts) is (refusal is None)


def test_the_rule_is_keyword_only():
    with pytest.raises(TypeError):
        grant_refusal(GRANTOR, OTHER, ACME_END_USER, (), False)  # type: ignore[misc]
