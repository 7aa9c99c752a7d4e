"""Truth tables of the pure decisions in token_exchange.policy."""

from __future__ import annotations

import datetime

import pytest

from token_exchange import policy
from token_exchange.constants import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TYPE
from token_exchange.exceptions import InvalidSubjectToken, ScopeRefusal, TargetRefusal


@pytest.mark.parametrize(
    ("client_id", "token_client_id", "audience", "resources", "allowed"),
    [
        ("portal", "portal", (), (), True),
        ("portal", "portal", ("https://a/",), (), True),
        ("crm", "portal", ("crm",), (), True),
        ("crm", "portal", ("portal", "https://a/"), (), False),
        ("crm", "portal", (), (), False),
        ("Portal", "portal", ("portal",), (), False),  # exact match only
        # A resource server is named by the resource URIs it serves (ClientPolicy.resource_uris).
        ("crm", "portal", ("portal", "https://crm/"), ("https://crm/",), True),
        ("crm", "portal", ("portal", "https://crm/"), ("https://CRM/",), False),
        ("crm", "portal", ("portal", "https://a/"), ("https://crm/",), False),
        ("crm", "portal", (), ("https://crm/",), False),
    ],
)
def test_may_present(client_id, token_client_id, audience, resources, allowed):
    assert (
        policy.may_present(
            client_id=client_id,
            token_client_id=token_client_id,
            token_audience=audience,
            client_resources=resources,
        )
        is allowed
    )


S = frozenset


@pytest.mark.parametrize(
    ("requested", "subject", "client", "result"),
    [
        (S(), S({"openid", "read"}), S({"openid", "read", "write"}), S({"openid", "read"})),
        (S(), S({"openid", "admin"}), S({"openid", "read"}), S({"openid"})),  # dropped, not widened
        (S(), S({"admin"}), S({"openid"}), "no_scope_left"),
        (S({"read"}), S({"openid", "read"}), S({"read"}), S({"read"})),
        (S({"read", "write"}), S({"read"}), S({"read", "write"}), "scope_exceeds_subject"),
        (S({"read"}), S({"read"}), S({"openid"}), "scope_not_allowed_for_client"),
    ],
)
def test_resolve_scope(requested, subject, client, result):
    if isinstance(result, str):
        with pytest.raises(ScopeRefusal) as refused:
            policy.resolve_scope(requested=requested, subject_scope=subject, client_scopes=client)
        assert refused.value.reason == result
    else:
        assert (
            policy.resolve_scope(requested=requested, subject_scope=subject, client_scopes=client) == result
        )


@pytest.mark.parametrize(
    ("requested", "allowed", "result"),
    [
        ((), ("a", "b"), ("a", "b")),
        (("b",), ("a", "b"), ("b",)),
        (("b", "b", "a"), ("a", "b"), ("b", "a")),
        (("c",), ("a", "b"), None),
        (("a", "c"), ("a", "b"), None),
        (("a",), (), None),
    ],
)
def test_resolve_audience(requested, allowed, result):
    if result is None:
        with pytest.raises(TargetRefusal):
            policy.resolve_audience(requested=requested, allowed=allowed)
    else:
        assert policy.resolve_audience(requested=requested, allowed=allowed) == result


NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.mark.parametrize(
    ("default", "remaining", "result"),
    [(3600, 7200, 3600), (3600, 60, 60), (3600, 3600, 3600), (3600, 0, None), (3600, -5, None)],
)
def test_lifetime_never_outlives_the_subject(default, remaining, result):
    not_after = NOW + datetime.timedelta(seconds=remaining)
    if result is None:
        with pytest.raises(InvalidSubjectToken):
            policy.lifetime_seconds(now=NOW, default_seconds=default, not_after=not_after)
    else:
        assert policy.lifetime_seconds(now=NOW, default_seconds=default, not_after=not_after) == result


@pytest.mark.parametrize(
    ("requested", "scope", "refresh", "id_token"),
    [
        (ACCESS_TOKEN_TYPE, S({"openid", "offline_access"}), True, True),
        (JWT_TYPE, S({"openid"}), False, True),
        (JWT_TYPE, S({"offline_access"}), True, False),
        (ACCESS_TOKEN_TYPE, S({"read"}), False, False),
        (ID_TOKEN_TYPE, S({"openid", "offline_access"}), False, False),
    ],
)
def test_which_extra_tokens_are_issued(requested, scope, refresh, id_token):
    assert policy.issues_refresh_token(requested_token_type=requested, scope=scope) is refresh
    assert policy.issues_id_token(requested_token_type=requested, scope=scope) is id_token
