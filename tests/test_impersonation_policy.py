"""Truth tables of the pure impersonation decisions in ``token_exchange.policy``."""

from __future__ import annotations

import pytest

from token_exchange.constants import ADMIN_IMPERSONATOR as ADMIN
from token_exchange.constants import END_USER_IMPERSONATOR as END_USER
from token_exchange.exceptions import Refusal, ScopeRefusal, TargetRefusal
from token_exchange.policy import (
    ImpersonationFacts,
    Link,
    Party,
    Role,
    act_claim,
    actor_chain,
    impersonation_decision,
    impersonation_refusal,
    may_impersonate,
    resolve_impersonation_audience,
    resolve_impersonation_scope,
    satisfies_may_act,
)

ACME, GLOBEX = 1, 2
ISS = "https://idp.example.com/o"

actor = Party(id="10")
superuser_actor = Party(id="11", is_superuser=True)
customer = Party(id="20", organizations=frozenset({ACME}))
globex_customer = Party(id="21", organizations=frozenset({GLOBEX}))
staff_customer = Party(id="22", is_admin=True, organizations=frozenset({ACME}))
superuser = Party(id="23", is_admin=True, is_superuser=True, organizations=frozenset({ACME}))
inactive_customer = Party(id="24", is_active=False, organizations=frozenset({ACME}))

IAM_ADMIN = Role(ADMIN)
IAM_END_USER = Role(END_USER)
ORG_ADMIN = Role(ADMIN, ACME)
ORG_END_USER = Role(END_USER, ACME)


@pytest.mark.parametrize(
    ("roles", "subject", "expected"),
    [
        # ZITADEL's four roles against an end user of ACME, of another organization, and an admin.
        ((IAM_END_USER,), customer, None),
        ((IAM_END_USER,), globex_customer, None),
        ((IAM_END_USER,), staff_customer, "subject_not_covered"),
        ((ORG_END_USER,), customer, None),
        ((ORG_END_USER,), globex_customer, "subject_not_covered"),
        ((ORG_END_USER,), staff_customer, "subject_not_covered"),
        ((IAM_ADMIN,), customer, None),
        ((IAM_ADMIN,), globex_customer, None),
        ((IAM_ADMIN,), staff_customer, None),
        ((ORG_ADMIN,), customer, None),
        ((ORG_ADMIN,), globex_customer, "subject_not_covered"),
        ((ORG_ADMIN,), staff_customer, None),
        # Several grants: any one that covers the subject is enough.
        ((ORG_END_USER, Role(ADMIN, GLOBEX)), globex_customer, None),
        ((ORG_END_USER, Role(END_USER, GLOBEX)), staff_customer, "subject_not_covered"),
        # No grant at all.
        ((), customer, "actor_not_impersonator"),
        # A superuser subject needs a superuser actor with an instance-wide admin grant.
        ((IAM_ADMIN,), superuser, "subject_is_superuser"),
        ((ORG_ADMIN,), superuser, "subject_is_superuser"),
        ((IAM_END_USER,), superuser, "subject_is_superuser"),
        # Inactive subject.
        ((IAM_ADMIN,), inactive_customer, "subject_inactive"),
    ],
)
def test_who_may_impersonate_whom(roles, subject, expected):
    assert impersonation_refusal(allowed=True, actor=actor, subject=subject, actor_roles=roles) == expected
    assert may_impersonate(allowed=True, actor=actor, subject=subject, actor_roles=roles) is (
        expected is None
    )


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        ((IAM_ADMIN,), None),
        ((ORG_ADMIN,), "subject_is_superuser"),
        ((IAM_END_USER,), "subject_is_superuser"),
        ((ORG_ADMIN, IAM_END_USER), "subject_is_superuser"),
    ],
)
def test_superuser_subjects(roles, expected):
    got = impersonation_refusal(allowed=True, actor=superuser_actor, subject=superuser, actor_roles=roles)
    assert got == expected


@pytest.mark.parametrize(
    ("allowed", "the_actor", "subject", "expected"),
    [
        (False, actor, customer, "impersonation_disabled"),
        (True, Party(id="10", is_active=False), customer, "actor_inactive"),
        (True, actor, Party(id="10"), "actor_is_subject"),
        (True, actor, customer, None),
    ],
)
def test_switch_activity_and_self(allowed, the_actor, subject, expected):
    got = impersonation_refusal(allowed=allowed, actor=the_actor, subject=subject, actor_roles=(IAM_ADMIN,))
    assert got == expected


def test_act_claim_nests_prior_actors_to_a_bounded_depth():
    first = act_claim(issuer=ISS, actor_id="1", prior=None, max_depth=3)
    assert first == {"iss": ISS, "sub": "1"}
    second = act_claim(issuer=ISS, actor_id="2", prior=first, max_depth=3)
    assert second == {"iss": ISS, "sub": "2", "act": {"iss": ISS, "sub": "1"}}
    third = act_claim(issuer=ISS, actor_id="3", prior=second, max_depth=3)
    assert [link["sub"] for link in actor_chain(third)] == ["3", "2", "1"]
    with pytest.raises(Refusal) as refused:
        act_claim(issuer=ISS, actor_id="4", prior=third, max_depth=3)
    assert refused.value.reason == "act_chain_too_deep"


@pytest.mark.parametrize(
    ("may_act", "actor_id", "expected"),
    [
        (None, "10", True),
        ({"sub": "10"}, "10", True),
        ({"sub": "10", "iss": ISS}, "10", True),
        ({"sub": "11"}, "10", False),
        ({"sub": "10", "iss": "https://evil.example.com"}, "10", False),
        ({}, "10", False),
    ],
)
def test_may_act(may_act, actor_id, expected):
    assert satisfies_may_act(may_act=may_act, issuer=ISS, actor_id=actor_id) is expected


CLIENT = frozenset({"openid", "profile", "email", "offline_access", "read", "write"})


@pytest.mark.parametrize(
    ("requested", "subject_scope", "authorizes", "actor_scope", "expected"),
    [
        # A user id carries nothing: subject data may be asked for, authorization comes from the actor.
        ({"openid", "profile", "email"}, set(), False, {"openid"}, {"openid", "profile", "email"}),
        ({"read"}, set(), False, {"openid", "read"}, {"read"}),
        ({"read"}, set(), False, {"openid"}, ScopeRefusal("scope_exceeds_actor")),
        ({"offline_access"}, set(), False, {"openid"}, ScopeRefusal("scope_exceeds_actor")),
        ({"admin"}, set(), False, {"admin"}, ScopeRefusal("scope_not_allowed_for_client")),
        (set(), set(), False, {"openid", "read"}, {"openid", "read"}),  # omitted: the actor's
        (set(), {"openid", "email"}, False, {"read"}, {"openid", "email"}),  # omitted: the subject's
        # An ID token subject lends subject data only.
        ({"openid", "write"}, {"openid"}, False, {"openid", "write"}, {"openid", "write"}),
        ({"openid", "write"}, {"openid"}, False, {"openid"}, ScopeRefusal("scope_exceeds_actor")),
        # An access-token subject carries the customer's authorization: stay within it.
        ({"read"}, {"openid", "read"}, True, set(), {"read"}),
        ({"write"}, {"openid", "read"}, True, {"write"}, ScopeRefusal("scope_exceeds_subject")),
        (set(), {"openid", "read"}, True, {"write"}, {"openid", "read"}),
    ],
)
def test_impersonation_scope(requested, subject_scope, authorizes, actor_scope, expected):
    def run():
        return resolve_impersonation_scope(
            requested=frozenset(requested),
            subject_scope=frozenset(subject_scope),
            subject_authorizes=authorizes,
            actor_scope=frozenset(actor_scope),
            client_scopes=CLIENT,
        )

    if isinstance(expected, Refusal):
        with pytest.raises(ScopeRefusal) as refused:
            run()
        assert refused.value.reason == expected.reason
    else:
        assert run() == frozenset(expected)


A, B, C = "https://a.example/", "https://b.example/", "https://c.example/"


@pytest.mark.parametrize(
    ("requested", "subject_audience", "actor_audience", "expected"),
    [
        ((), (A,), (B,), (A,)),  # omitted: the subject's
        ((), (), (B,), (B,)),  # ... else the actor's
        ((B,), (A,), (B,), (B,)),  # within the union
        ((A, B), (A,), (B,), (A, B)),
        ((C,), (A,), (B,), None),  # widening
    ],
)
def test_impersonation_audience(requested, subject_audience, actor_audience, expected):
    if expected is None:
        with pytest.raises(TargetRefusal):
            resolve_impersonation_audience(
                requested=requested, subject_audience=subject_audience, actor_audience=actor_audience
            )
    else:
        got = resolve_impersonation_audience(
            requested=requested, subject_audience=subject_audience, actor_audience=actor_audience
        )
        assert got == expected


# The one decision every entry point asks (impersonation_decision.py gathers the facts).
ALLOWED_ACTOR = Link(trusted_issuer=True, actor=actor, roles=(ORG_END_USER,))
NO_ROLE_ACTOR = Link(trusted_issuer=True, actor=actor)
FOREIGN = Link(trusted_issuer=False)
DELETED = Link(trusted_issuer=True)


@pytest.mark.parametrize(
    ("allowed", "closed", "may_act", "chain", "standing", "expected"),
    [
        (True, None, True, (ALLOWED_ACTOR,), None, None),
        (False, None, True, (ALLOWED_ACTOR,), None, "impersonation_disabled"),
        (False, "impersonation_ended", False, (FOREIGN,), "session_ended", "impersonation_ended"),
        (False, None, False, (FOREIGN,), "session_ended", "impersonation_disabled"),
        (True, "impersonation_ended", True, (ALLOWED_ACTOR,), None, "impersonation_ended"),
        (True, "impersonation_expired", False, (DELETED,), None, "impersonation_expired"),
        (True, None, False, (ALLOWED_ACTOR,), None, "may_act_mismatch"),
        (True, None, False, (NO_ROLE_ACTOR,), None, "may_act_mismatch"),
        (True, None, True, (FOREIGN,), None, "foreign_actor"),
        (True, None, True, (DELETED,), None, "actor_deleted"),
        (True, None, True, (NO_ROLE_ACTOR,), None, "actor_not_impersonator"),
        # every actor of a nested chain is asked, the current one first
        (True, None, True, (ALLOWED_ACTOR, ALLOWED_ACTOR), None, None),
        (True, None, True, (ALLOWED_ACTOR, NO_ROLE_ACTOR), None, "actor_not_impersonator"),
        (True, None, True, (ALLOWED_ACTOR, FOREIGN), None, "foreign_actor"),
        (True, None, True, (NO_ROLE_ACTOR, DELETED), None, "actor_not_impersonator"),
        # the session's application and browser session come last
        (True, None, True, (ALLOWED_ACTOR,), "session_ended", "session_ended"),
        (True, None, True, (ALLOWED_ACTOR,), "application_not_launchable", "application_not_launchable"),
        (True, None, True, (NO_ROLE_ACTOR,), "session_ended", "actor_not_impersonator"),
        # an empty chain decides nothing about users (a running session still answers)
        (True, None, True, (), None, None),
        (True, None, True, (), "password_changed", "password_changed"),
    ],
)
def test_the_one_impersonation_decision(allowed, closed, may_act, chain, standing, expected):
    facts = ImpersonationFacts(
        allowed=allowed,
        subject=customer,
        chain=chain,
        may_act=may_act,
        session_closed=closed,
        session_standing=standing,
    )
    assert impersonation_decision(facts) == expected


@pytest.mark.parametrize(
    ("the_actor", "subject", "roles"),
    [
        (actor, customer, (ORG_END_USER,)),
        (actor, staff_customer, (ORG_END_USER,)),
        (actor, globex_customer, (ORG_ADMIN,)),
        (superuser_actor, superuser, (IAM_ADMIN,)),
        (actor, superuser, (IAM_ADMIN,)),
        (Party(id="20"), customer, (IAM_ADMIN,)),
        (Party(id="12", is_active=False), customer, (IAM_ADMIN,)),
        (actor, inactive_customer, (IAM_ADMIN,)),
    ],
)
def test_a_one_actor_chain_decides_as_the_rules_for_that_actor(the_actor, subject, roles):
    facts = ImpersonationFacts(
        allowed=True, subject=subject, chain=(Link(trusted_issuer=True, actor=the_actor, roles=roles),)
    )
    assert impersonation_decision(facts) == impersonation_refusal(
        allowed=True, actor=the_actor, subject=subject, actor_roles=roles
    )
