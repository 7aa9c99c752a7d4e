"""The oauthlib server classes and DOT's backend are reached through public APIs only (issue 19):
the grant is registered through ``TokenEndpoint.__init__`` and read back through the public
``grant_types`` property, and each token request's transaction wraps oauthlib's public
``create_token_response``. `.ci/run` runs this on every cell, oauthlib 3.3 and 4 alike."""

from __future__ import annotations

import ast
import inspect
from typing import Any

import pytest
from oauth2_provider.oauth2_backends import OAuthLibCore
from oauth2_provider.settings import oauth2_settings
from oauthlib import oauth2, openid

from token_exchange.constants import GRANT_TYPE, JWT_BEARER_GRANT_TYPE
from token_exchange.grant import TokenExchangeGrant
from token_exchange.jwt_bearer import JwtBearerGrant
from token_exchange.oauth import backend, server
from token_exchange.oauth.validator import TokenExchangeValidator

DEVICE_CODE = "urn:ietf:params:oauth:grant-type:device_code"
SERVERS = [(server.Server, oauth2.Server), (server.OIDCServer, openid.Server)]


def build(server_class: type) -> Any:
    """As DOT builds it: the validator and DOT's ``server_kwargs``."""
    return server_class(TokenExchangeValidator(), **oauth2_settings.server_kwargs)


@pytest.mark.parametrize(("ours", "theirs"), SERVERS)
def test_the_token_endpoint_knows_the_grant(ours: type, theirs: type) -> None:
    ours_built = build(ours)

    assert isinstance(ours_built, theirs)
    assert isinstance(ours_built.token_exchange_grant, TokenExchangeGrant)
    assert ours_built.grant_types[GRANT_TYPE] is ours_built.token_exchange_grant
    assert isinstance(ours_built.jwt_bearer_grant, JwtBearerGrant)
    assert ours_built.grant_types[JWT_BEARER_GRANT_TYPE] is ours_built.jwt_bearer_grant


@pytest.mark.parametrize(("ours", "theirs"), SERVERS)
def test_every_grant_oauthlib_registers_stays_registered(ours: type, theirs: type) -> None:
    ours_built, theirs_built = build(ours), build(theirs)

    assert ours_built.grant_types.keys() == theirs_built.grant_types.keys() | {
        GRANT_TYPE,
        JWT_BEARER_GRANT_TYPE,
    }
    assert DEVICE_CODE in ours_built.grant_types  # oauthlib 3.3 and later
    for name, grant in ours_built.grant_types.items():
        if name not in (GRANT_TYPE, JWT_BEARER_GRANT_TYPE):
            assert type(grant) is type(theirs_built.grant_types[name]), name
    assert ours_built.grant_types["refresh_token"] is ours_built.refresh_grant
    assert ours_built.default_grant_type == theirs_built.default_grant_type
    # The token type the constructor built from DOT's settings (openid.Server's UserInfoEndpoint
    # later replaces the ``bearer`` attribute with a plain one, so it is compared field by field).
    token_type, their_token_type = ours_built.default_token_type, theirs_built.default_token_type
    assert type(token_type) is type(their_token_type)
    for field in ("token_generator", "refresh_token_generator", "expires_in"):
        assert getattr(token_type, field) == getattr(their_token_type, field), field
    assert ours_built.response_types.keys() == theirs_built.response_types.keys()
    assert ours_built.available
    assert not ours_built.catch_errors


def private_names_used(module: object) -> set[str]:
    """Attributes starting with one underscore that the module reads or writes."""
    tree = ast.parse(inspect.getsource(module))  # type: ignore[arg-type]
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
    }


@pytest.mark.parametrize(
    ("module", "own"),
    [
        pytest.param(server, {"_register_token_exchange"}, id="server"),
        pytest.param(backend, set(), id="backend"),
    ],
)
def test_no_private_name_of_oauthlib_or_dot(module: object, own: set[str]) -> None:
    assert private_names_used(module) == own


def test_dot_answers_token_requests_itself() -> None:
    """DOT's ``OAuthLibCore.create_token_response`` turns a raised OAuth error into its answer,
    after the server's transaction has rolled back."""
    assert "create_token_response" not in vars(backend.TokenExchangeOAuthLibCore)
    assert issubclass(backend.TokenExchangeOAuthLibCore, OAuthLibCore)
    assert "create_token_response" in vars(server._TokenExchangeMixin)
