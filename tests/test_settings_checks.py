"""TOKEN_EXCHANGE is validated: E008 for a value of the wrong type, E009 for a key nobody reads.

The rules live once, in ``token_exchange.conf.SETTINGS``; the checks and the properties read them.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from token_exchange import checks
from token_exchange.conf import SETTINGS, TokenExchangeSettings, invalid, token_exchange_settings
from token_exchange.impersonation.guard import ImpersonationGuardMiddleware

E008 = "token_exchange.E008"
E009 = "token_exchange.E009"


def run(token_exchange: Any) -> list[Any]:
    with override_settings(TOKEN_EXCHANGE=token_exchange):
        return checks.check_setting_values() + checks.check_setting_keys()


def ids(token_exchange: Any) -> list[str]:
    return [message.id for message in run(token_exchange)]


def test_example_project_passes():
    assert checks.check_setting_values() == []
    assert checks.check_setting_keys() == []
    call_command("check")  # raises SystemCheckError on any error


def test_no_setting_at_all_passes(settings):
    del settings.TOKEN_EXCHANGE
    assert checks.check_setting_values() + checks.check_setting_keys() == []


def test_every_property_is_declared():
    """A new property without a line in SETTINGS would escape the checks: this test says so."""
    properties = {
        name
        for name, attribute in vars(TokenExchangeSettings).items()
        if isinstance(attribute, property) and not name.startswith("_")
    }
    assert properties == set(SETTINGS)


@override_settings(TOKEN_EXCHANGE={})
@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_every_default_keeps_its_own_rules(name):
    assert invalid(name, getattr(token_exchange_settings, name)) is None


# E008, one message per bad key, naming the key, what it must be, and what it is.


def test_e008_token_exchange_is_not_a_dict():
    [message] = run([("MAX_ACT_DEPTH", 2)])
    assert message.id == E008
    assert message.msg == "TOKEN_EXCHANGE must be a dict, not list: none of it is read."
    assert message.hint == (
        "Write TOKEN_EXCHANGE = {'REPLAY_CACHE': 'default', ...} with the keys of docs/settings.md, "
        "or remove it to get the defaults."
    )


def test_e008_a_string_of_url_prefixes():
    [message] = run({"PRIVILEGED_URL_PREFIXES": "/admin/"})
    assert message.id == E008
    assert message.msg == (
        "TOKEN_EXCHANGE['PRIVILEGED_URL_PREFIXES'] must be a list or tuple of URL path prefixes, or None, "
        "not str '/admin/': until it is, impersonated tokens are refused on every path."
    )
    assert message.hint == (
        "Write e.g. TOKEN_EXCHANGE['PRIVILEGED_URL_PREFIXES'] = ['/admin/'], "
        "or remove the key to get the default."
    )


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "MAX_ACT_DEPTH",
            True,
            "TOKEN_EXCHANGE['MAX_ACT_DEPTH'] must be an integer from 1 to 16, not bool True.",
        ),
        (
            "IMPERSONATION_TOKEN_EXPIRE_SECONDS",
            "600",
            "TOKEN_EXCHANGE['IMPERSONATION_TOKEN_EXPIRE_SECONDS'] must be an integer of seconds from 1 to "
            "31622400 (366 days), not str '600'.",
        ),
        (
            "ACCESS_TOKEN_EXPIRE_SECONDS",
            0,
            "TOKEN_EXCHANGE['ACCESS_TOKEN_EXPIRE_SECONDS'] must be an integer of seconds from 1 to "
            "31622400 (366 days) or None, not int 0.",
        ),
        (
            "JWT_LEEWAY_SECONDS",
            -1,
            "TOKEN_EXCHANGE['JWT_LEEWAY_SECONDS'] must be an integer of seconds from 0 to 300, not int -1.",
        ),
        (
            "THROTTLE_REFUSALS",
            -1,
            "TOKEN_EXCHANGE['THROTTLE_REFUSALS'] must be an integer from 0 (off) to 1000000, not int -1.",
        ),
        (
            "THROTTLE_WINDOW_SECONDS",
            "60",
            "TOKEN_EXCHANGE['THROTTLE_WINDOW_SECONDS'] must be an integer of seconds from 1 to 86400, "
            "not str '60'.",
        ),
        (
            "USER_ORGANIZATIONS",
            "crm.organizations",
            "TOKEN_EXCHANGE['USER_ORGANIZATIONS'] must be a callable or its dotted path, "
            "not str 'crm.organizations': No module named 'crm'.",
        ),
        (
            "IS_ADMIN_SUBJECT",
            "token_exchange.conf.SETTINGS",
            "TOKEN_EXCHANGE['IS_ADMIN_SUBJECT'] must be a callable or its dotted path, "
            "not str 'token_exchange.conf.SETTINGS': it names a dict, which cannot be called.",
        ),
        (
            "ORGANIZATION_MODEL",
            "crm.Organization",
            "TOKEN_EXCHANGE['ORGANIZATION_MODEL'] must be 'app_label.ModelName' of an installed model, "
            "not str 'crm.Organization': No installed app with label 'crm'.",
        ),
        (
            "ORGANIZATION_MODEL",
            "Group",
            "TOKEN_EXCHANGE['ORGANIZATION_MODEL'] must be 'app_label.ModelName' of an installed model, "
            "not str 'Group': it is not of the form app_label.ModelName.",
        ),
        (
            "PRIVILEGED_URL_PREFIXES",
            ["admin/"],
            "TOKEN_EXCHANGE['PRIVILEGED_URL_PREFIXES'] must be a list or tuple of URL path prefixes, "
            "or None, not list ['admin/']: 'admin/' does not start with '/', so no path matches it; "
            "until it is, impersonated tokens are refused on every path.",
        ),
        (
            "REPLAY_CACHE",
            None,
            "TOKEN_EXCHANGE['REPLAY_CACHE'] must be a CACHES alias (a string), not NoneType None.",
        ),
        (
            "CLIENT_AUTHENTICATION",
            "dot",
            "TOKEN_EXCHANGE['CLIENT_AUTHENTICATION'] must be 'token_exchange' or 'oauth2_provider', "
            "not str 'dot'.",
        ),
    ],
)
def test_e008_message(name, value, expected):
    [message] = run({name: value})
    assert (message.id, message.msg) == (E008, expected)
    example = SETTINGS[name].example
    assert (
        message.hint
        == f"Write e.g. TOKEN_EXCHANGE[{name!r}] = {example}, or remove the key to get the default."
    )


def test_e008_a_long_value_is_shortened():
    [message] = run({"REPLAY_CACHE": list(range(100))})
    assert message.msg == (
        "TOKEN_EXCHANGE['REPLAY_CACHE'] must be a CACHES alias (a string), "
        "not list [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, …."
    )


def test_e008_one_message_per_bad_key():
    messages = run({"MAX_ACT_DEPTH": 0, "JWT_LEEWAY_SECONDS": 60, "REPLAY_CACHE": 1})
    assert [(message.id, message.msg.split("]")[0]) for message in messages] == [
        (E008, "TOKEN_EXCHANGE['MAX_ACT_DEPTH'"),
        (E008, "TOKEN_EXCHANGE['REPLAY_CACHE'"),
    ]


# E009: a key nobody reads, most likely a typo that silently leaves the default in place.


def test_e009_a_typo():
    [message] = run({"IMPERSONATION_TOKEN_EXPIRE_SECOND": 600})
    assert message.id == E009
    assert message.msg == (
        "TOKEN_EXCHANGE has a key this package does not read: 'IMPERSONATION_TOKEN_EXPIRE_SECOND'; "
        "its value is ignored."
    )
    assert message.hint == "Did you mean 'IMPERSONATION_TOKEN_EXPIRE_SECONDS'?"


def test_e009_lower_case():
    [message] = run({"replay_cache": "default"})
    assert message.hint == "Did you mean 'REPLAY_CACHE'?"


def test_e009_nothing_close():
    [message] = run({"COLOUR": "blue"})
    assert (
        message.msg == "TOKEN_EXCHANGE has a key this package does not read: 'COLOUR'; its value is ignored."
    )
    assert message.hint == (
        "Remove it. The keys are ACCESS_TOKEN_EXPIRE_SECONDS, ID_TOKEN_EXPIRE_SECONDS, "
        "IMPERSONATION_TOKEN_EXPIRE_SECONDS, ADMIN_IMPERSONATION_MAX_SECONDS, MAX_ACT_DEPTH, "
        "ORGANIZATION_MODEL, USER_ORGANIZATIONS, IS_ADMIN_SUBJECT, PRIVILEGED_URL_PREFIXES, "
        "JWT_LEEWAY_SECONDS, REPLAY_CACHE, THROTTLE_REFUSALS, THROTTLE_WINDOW_SECONDS, THROTTLE_CACHE, "
        "CLIENT_AUTHENTICATION, FEDERATION_CACHE, FEDERATION_TIMEOUT_SECONDS, "
        "FEDERATION_ALLOW_HTTP_LOOPBACK, FEDERATION_RESOLVER, JWT_BEARER_MAX_LIFETIME_SECONDS, "
        "JWT_BEARER_REFRESH_TOKENS, RESOURCE_SERVER (docs/settings.md)."
    )


def user_organizations(user: Any) -> list[int]:
    return []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("ACCESS_TOKEN_EXPIRE_SECONDS", None, []),
        ("ACCESS_TOKEN_EXPIRE_SECONDS", 300, []),
        ("ACCESS_TOKEN_EXPIRE_SECONDS", 0, [E008]),
        ("ACCESS_TOKEN_EXPIRE_SECONDS", -300, [E008]),
        ("ACCESS_TOKEN_EXPIRE_SECONDS", "300", [E008]),
        ("ACCESS_TOKEN_EXPIRE_SECONDS", 300.0, [E008]),
        ("ACCESS_TOKEN_EXPIRE_SECONDS", True, [E008]),
        ("ID_TOKEN_EXPIRE_SECONDS", None, []),
        ("ID_TOKEN_EXPIRE_SECONDS", 60, []),
        ("ID_TOKEN_EXPIRE_SECONDS", False, [E008]),
        ("IMPERSONATION_TOKEN_EXPIRE_SECONDS", 600, []),
        ("IMPERSONATION_TOKEN_EXPIRE_SECONDS", None, [E008]),
        ("IMPERSONATION_TOKEN_EXPIRE_SECONDS", 0, [E008]),
        ("ADMIN_IMPERSONATION_MAX_SECONDS", 120, []),
        ("ADMIN_IMPERSONATION_MAX_SECONDS", -60, [E008]),
        ("ADMIN_IMPERSONATION_MAX_SECONDS", "1h", [E008]),
        ("MAX_ACT_DEPTH", 1, []),
        ("MAX_ACT_DEPTH", 0, [E008]),
        ("MAX_ACT_DEPTH", True, [E008]),
        ("MAX_ACT_DEPTH", "4", [E008]),
        ("ORGANIZATION_MODEL", "auth.Group", []),
        ("ORGANIZATION_MODEL", "auth", [E008]),
        ("ORGANIZATION_MODEL", "auth.models.Group", [E008]),
        ("ORGANIZATION_MODEL", "auth.Organization", [E008]),
        ("ORGANIZATION_MODEL", Group, [E008]),
        ("USER_ORGANIZATIONS", "token_exchange.impersonation.facts.user_groups", []),
        ("USER_ORGANIZATIONS", user_organizations, []),
        ("USER_ORGANIZATIONS", "tests.test_settings_checks.user_organizations", []),
        ("USER_ORGANIZATIONS", "token_exchange.impersonation.facts.nothing_here", [E008]),
        ("USER_ORGANIZATIONS", "user_groups", [E008]),
        ("USER_ORGANIZATIONS", 42, [E008]),
        ("IS_ADMIN_SUBJECT", "token_exchange.impersonation.facts.is_admin_subject", []),
        ("IS_ADMIN_SUBJECT", "nowhere.is_admin", [E008]),
        ("IS_ADMIN_SUBJECT", None, [E008]),
        ("PRIVILEGED_URL_PREFIXES", None, []),
        ("PRIVILEGED_URL_PREFIXES", [], []),
        ("PRIVILEGED_URL_PREFIXES", ["/admin/"], []),
        ("PRIVILEGED_URL_PREFIXES", ("/admin/", "/staff/"), []),
        ("PRIVILEGED_URL_PREFIXES", "/admin/", [E008]),  # also ("/admin/"), its comma forgotten
        ("PRIVILEGED_URL_PREFIXES", ["admin/"], [E008]),
        ("PRIVILEGED_URL_PREFIXES", [b"/admin/"], [E008]),
        ("PRIVILEGED_URL_PREFIXES", {"/admin/"}, [E008]),
        ("JWT_LEEWAY_SECONDS", 0, []),
        ("JWT_LEEWAY_SECONDS", 60, []),
        ("JWT_LEEWAY_SECONDS", -1, [E008]),
        ("JWT_LEEWAY_SECONDS", 300, []),
        # Ceilings: a leeway of years, a lifetime that overflows a datetime, an act chain too deep.
        ("JWT_LEEWAY_SECONDS", 301, [E008]),
        ("IMPERSONATION_TOKEN_EXPIRE_SECONDS", 366 * 24 * 3600, []),
        ("IMPERSONATION_TOKEN_EXPIRE_SECONDS", 10**12, [E008]),
        ("ADMIN_IMPERSONATION_MAX_SECONDS", 10**12, [E008]),
        ("ACCESS_TOKEN_EXPIRE_SECONDS", 366 * 24 * 3600 + 1, [E008]),
        ("MAX_ACT_DEPTH", 16, []),
        ("MAX_ACT_DEPTH", 17, [E008]),
        ("JWT_LEEWAY_SECONDS", 1.5, [E008]),
        ("REPLAY_CACHE", "default", []),
        ("REPLAY_CACHE", 5, [E008]),
        ("THROTTLE_REFUSALS", 0, []),
        ("THROTTLE_REFUSALS", 100, []),
        ("THROTTLE_REFUSALS", 1_000_000, []),
        ("THROTTLE_REFUSALS", 1_000_001, [E008]),
        ("THROTTLE_REFUSALS", -1, [E008]),
        ("THROTTLE_REFUSALS", False, [E008]),
        ("THROTTLE_REFUSALS", None, [E008]),
        ("THROTTLE_WINDOW_SECONDS", 1, []),
        ("THROTTLE_WINDOW_SECONDS", 86_400, []),
        ("THROTTLE_WINDOW_SECONDS", 0, [E008]),
        ("THROTTLE_WINDOW_SECONDS", 86_401, [E008]),
        ("THROTTLE_CACHE", "default", []),
        ("THROTTLE_CACHE", None, [E008]),
        ("CLIENT_AUTHENTICATION", "token_exchange", []),
        ("CLIENT_AUTHENTICATION", "oauth2_provider", []),
        ("CLIENT_AUTHENTICATION", "OAUTH2_PROVIDER", [E008]),
        ("CLIENT_AUTHENTICATION", None, [E008]),
        ("REPLAY_CACH", "default", [E009]),
        ("replay_cache", "default", [E009]),
        ("LEEWAY", 60, [E009]),
    ],
)
def test_settings_table(name, value, expected):
    assert ids({name: value}) == expected


# At request time the properties apply the same rules: a wrong value is never silently reread.


@pytest.mark.parametrize(
    ("value", "prefixes"),
    [
        (None, None),
        ([], ()),
        (["/admin/", "/staff/"], ("/admin/", "/staff/")),
        # Not a list or tuple of paths: the guard refuses impersonated tokens everywhere rather
        # than guess (tuple("/admin/") would be its characters; "admin/" matches no path).
        ("/admin/", ("/",)),
        ("admin", ("/",)),
        (["admin/"], ("/",)),
        ([None], ("/",)),
        (7, ("/",)),
    ],
)
def test_privileged_url_prefixes_at_request_time(value, prefixes):
    with override_settings(TOKEN_EXCHANGE={"PRIVILEGED_URL_PREFIXES": value}):
        assert prefixes == token_exchange_settings.PRIVILEGED_URL_PREFIXES


@override_settings(TOKEN_EXCHANGE={"PRIVILEGED_URL_PREFIXES": "/drf/"})
def test_a_string_of_prefixes_keeps_impersonated_tokens_out_everywhere():
    guard = ImpersonationGuardMiddleware(lambda request: HttpResponse("served"))
    for path in ("/drf/orders/", "/api/aggregates/", "/"):
        impersonated = RequestFactory().get(path)
        impersonated._token_exchange_actor = {"iss": "http://127.0.0.1:8000/o", "sub": "1"}
        assert guard(impersonated).status_code == 403
        not_impersonated = RequestFactory().get(path)
        not_impersonated._token_exchange_actor = None
        assert guard(not_impersonated).content == b"served"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ACCESS_TOKEN_EXPIRE_SECONDS", 0),
        ("ID_TOKEN_EXPIRE_SECONDS", "300"),
        ("IMPERSONATION_TOKEN_EXPIRE_SECONDS", True),
        ("ADMIN_IMPERSONATION_MAX_SECONDS", -1),
        ("MAX_ACT_DEPTH", 2.5),
        ("JWT_LEEWAY_SECONDS", None),
        ("USER_ORGANIZATIONS", "nowhere.at_all"),
        ("IS_ADMIN_SUBJECT", "token_exchange.conf.SETTINGS"),
    ],
)
def test_a_wrong_value_is_refused_at_request_time_in_e008s_words(name, value):
    with override_settings(TOKEN_EXCHANGE={name: value}):
        [message] = run({name: value})
        with pytest.raises(ImproperlyConfigured) as refused:
            getattr(token_exchange_settings, name)
    assert str(refused.value) == f"{message.msg} {message.hint}"


@override_settings(
    TOKEN_EXCHANGE={"MAX_ACT_DEPTH": 2, "JWT_LEEWAY_SECONDS": 0, "USER_ORGANIZATIONS": user_organizations}
)
def test_right_values_are_read_as_written():
    assert token_exchange_settings.MAX_ACT_DEPTH == 2
    assert token_exchange_settings.JWT_LEEWAY_SECONDS == 0
    assert token_exchange_settings.USER_ORGANIZATIONS is user_organizations
