"""The private names of DOT and oauthlib this package leans on still exist, with the parameters we
pass, on the installed versions: `.ci/run` runs this on every cell of the supported matrix
(docs/support.md), so a release that renames one fails here instead of silently skipping our
override (a renamed hook would not be called, and its checks would not run).

Each override says in validator.py why, the DOT version it was checked against and the public hook
that would replace it; docs/support.md lists them. The oauthlib server classes and DOT's backend
are used through public APIs only (tests/test_server_public_api.py), and Django's ORM internals
only in token_exchange/db/orm_internals.py (tests/test_private_imports.py).
"""

from __future__ import annotations

import inspect

import pytest
from oauth2_provider.oauth2_validators import OAuth2Validator

from token_exchange.oauth.validator import TokenExchangeValidator

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


def leading_parameters(function: object, count: int) -> list[str]:
    return list(inspect.signature(function).parameters)[:count]  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "parameters"), VALIDATOR_HOOKS.items())
def test_dot_validator_hooks_we_override_exist(name: str, parameters: list[str]) -> None:
    ours = TokenExchangeValidator.__dict__.get(name)
    assert ours is not None, f"TokenExchangeValidator no longer overrides {name}: update this list"
    dot = getattr(OAuth2Validator, name, None)
    assert dot is not None, f"DOT's OAuth2Validator has no {name}: our override is dead code"
    assert leading_parameters(dot, len(parameters)) == parameters
