"""The private names of DOT and oauthlib this package leans on still exist, with the parameters we
pass, on the installed versions: `.ci/run` runs this on every cell of the supported matrix
(docs/support.md), so a release that renames one fails here instead of silently skipping our
override (a renamed hook would not be called, and its checks would not run).

Issue 19 replaces these with public APIs; until then each is listed here and in docs/support.md.
"""

from __future__ import annotations

import inspect

import pytest
from oauth2_provider.oauth2_backends import OAuthLibCore
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.oauth2 import Server
from oauthlib.openid import Server as OIDCServer

from token_exchange.backend import TokenExchangeOAuthLibCore
from token_exchange.constants import GRANT_TYPE
from token_exchange.server import OIDCServer as OurOIDCServer
from token_exchange.server import Server as OurServer
from token_exchange.validator import TokenExchangeValidator

# DOT's validator methods TokenExchangeValidator overrides, with the leading parameters it relies on.
VALIDATOR_HOOKS = {
    "_load_application": ["self", "client_id", "request"],
    "_create_authorization_code": ["self", "request", "code"],
    "_validate_resource_uris": ["self", "request", "resources"],
    "_check_and_set_request_resource": ["self", "request"],
    "_save_bearer_token": ["self", "token", "request"],
    "_save_id_token": ["self", "jti", "request", "expires"],
    "_create_access_token": ["self", "expires", "request", "token"],
    "_create_refresh_token": ["self", "request", "refresh_token_code", "access_token"],
}
BACKEND_HOOKS = {
    "_extract_params": ["self", "request"],
    "_get_extra_credentials": ["self", "request"],
}


def leading_parameters(function: object, count: int) -> list[str]:
    return list(inspect.signature(function).parameters)[:count]  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "parameters"), VALIDATOR_HOOKS.items())
def test_dot_validator_hooks_we_override_exist(name: str, parameters: list[str]) -> None:
    ours = TokenExchangeValidator.__dict__.get(name)
    assert ours is not None, f"TokenExchangeValidator no longer overrides {name}: update this list"
    dot = getattr(OAuth2Validator, name, None)
    assert dot is not None, f"DOT's OAuth2Validator has no {name}: our override is dead code"
    assert leading_parameters(dot, len(parameters)) == parameters


@pytest.mark.parametrize(("name", "parameters"), BACKEND_HOOKS.items())
def test_dot_backend_helpers_we_call_exist(name: str, parameters: list[str]) -> None:
    assert callable(getattr(OAuthLibCore, name, None)), f"DOT's OAuthLibCore has no {name}"
    assert leading_parameters(getattr(OAuthLibCore, name), len(parameters)) == parameters
    assert issubclass(TokenExchangeOAuthLibCore, OAuthLibCore)


@pytest.mark.parametrize(("ours", "theirs"), [(OurServer, Server), (OurOIDCServer, OIDCServer)])
def test_oauthlib_servers_keep_their_grant_table(ours: type, theirs: type) -> None:
    """The grant is registered in oauthlib's ``_grant_types``, which the token endpoint reads."""
    server = ours(TokenExchangeValidator())
    assert isinstance(server, theirs)
    assert isinstance(server._grant_types, dict)
    assert server._grant_types[GRANT_TYPE] is server.token_exchange_grant
    assert server.grant_types is server._grant_types, "the token endpoint no longer reads _grant_types"
