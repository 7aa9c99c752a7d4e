"""oauthlib server classes with the token exchange grant registered on the token endpoint.

Point DOT at them with ``OAUTH2_PROVIDER["OAUTH2_SERVER_CLASS"]`` and ``["OIDC_SERVER_CLASS"]``.

Only oauthlib's public API is used: the pre-configured ``oauth2.Server`` and ``openid.Server``
build their endpoints and grants, then the token endpoint is initialised once more through its
public constructor (``TokenEndpoint.__init__``, as those servers themselves do) with the same
grant table, read through the public ``grant_types`` property, plus RFC 8693. Copying either
server's constructor instead (some 40 and 90 lines, identical in oauthlib 3.3.1 and 4.0.1) would
have to follow each release's grants (the device code grant arrived in 3.3); this way, whatever
grants the installed oauthlib registers stay registered.
"""

from __future__ import annotations

from typing import Any

from django.db import router, transaction
from oauth2_provider.models import get_access_token_model
from oauthlib import oauth2, openid
from oauthlib.oauth2 import TokenEndpoint

from token_exchange.constants import GRANT_TYPE, JWT_BEARER_GRANT_TYPE
from token_exchange.grant import TokenExchangeGrant
from token_exchange.jwt_bearer import JwtBearerGrant


class _TokenExchangeMixin:
    """Registers the grant and runs each token request in one database transaction."""

    token_exchange_grant: TokenExchangeGrant
    jwt_bearer_grant: JwtBearerGrant

    def _register_token_exchange(self, request_validator: Any) -> None:
        self.token_exchange_grant = TokenExchangeGrant(request_validator)
        self.jwt_bearer_grant = JwtBearerGrant(request_validator)
        endpoint: Any = self
        TokenEndpoint.__init__(
            endpoint,
            default_grant_type=endpoint.default_grant_type,
            default_token_type=endpoint.default_token_type,
            grant_types={
                **endpoint.grant_types,
                GRANT_TYPE: self.token_exchange_grant,
                JWT_BEARER_GRANT_TYPE: self.jwt_bearer_grant,
            },
        )

    def create_token_response(self, uri: str, *args: Any, **kwargs: Any) -> tuple[dict[str, str], str, int]:
        """oauthlib's token response, in one transaction that an error raised midway rolls back.

        oauthlib's OpenID Connect modifier stores a refresh's ID token before DOT stores the
        access and refresh tokens; if that second step raises (an OAuth error, a database
        fault, an audit row that cannot be written), nothing of the response may remain. DOT's
        ``OAuthLibCore.create_token_response`` turns a raised OAuth error into its answer after
        this transaction has rolled back. Errors oauthlib *returns* (refusals) commit, so their
        audit rows stay.
        """
        with transaction.atomic(using=router.db_for_write(get_access_token_model())):
            response: tuple[dict[str, str], str, int] = super().create_token_response(  # type: ignore[misc]
                uri, *args, **kwargs
            )
        return response


class Server(_TokenExchangeMixin, oauth2.Server):  # type: ignore[misc]
    """``oauthlib.oauth2.Server`` plus RFC 8693."""

    def __init__(self, request_validator: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(request_validator, *args, **kwargs)
        self._register_token_exchange(request_validator)


class OIDCServer(_TokenExchangeMixin, openid.Server):  # type: ignore[misc]
    """``oauthlib.openid.Server`` plus RFC 8693 (DOT uses it when ``OIDC_ENABLED``)."""

    def __init__(self, request_validator: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(request_validator, *args, **kwargs)
        self._register_token_exchange(request_validator)
