"""``urn:ietf:params:oauth:token-type:access_token``: an opaque or JWT access token we issued.

Both kinds are rows of DOT's AccessToken table (JWTs are stored too), so one checksum lookup
finds either; the row, not the JWT's signature, is the authority on whether it is still live.
Its refresh token and the one it was refreshed from come in the same query: they name the
authorization the token belongs to (``lineage.of_access_token``), should it act. A token an
exchange issued must also descend from an authorization that is still alive: one more query for
those tokens only (``lineage.refuse_if_ended``), here as at introspection and on refresh. A
token DOT issued at a login is its own authorization: that its row exists is enough.

The liveness test is not an annotation on this lookup: PostgreSQL planned its subqueries on every
request (2 ms, more than the whole lookup), for every token, exchanged or not.
"""

from __future__ import annotations

import hashlib
from typing import Any

from oauth2_provider.models import get_access_token_model

from token_exchange.db.lookups import PreparedLookup
from token_exchange.exceptions import Refusal
from token_exchange.issuance import lineage
from token_exchange.tokens.base import VerifiedToken, access_token_claims

_BY_CHECKSUM = PreparedLookup(
    lambda: get_access_token_model().objects.select_related(
        "user", "application", "exchanged", *lineage.access_token_related()
    ),
    "token_checksum",
)


def load_access_token(value: str) -> Any:
    """DOT's AccessToken row for a token value (or None), with what the claims are made of."""
    return _BY_CHECKSUM.get(hashlib.sha256(value.encode("utf-8")).hexdigest())


def read_access_token(value: str, token_type: str, refusal: type[Refusal]) -> VerifiedToken:
    token = load_access_token(value)
    if token is None:
        raise refusal("unknown_token")
    if token.is_expired():
        raise refusal("expired_token")
    if token.application is None:
        # A resource server's cache of a foreign server's token (DOT introspection), not ours.
        raise refusal("foreign_token")
    if token.user is None:
        raise refusal("token_without_user")  # client_credentials: no subject to act for
    if not token.user.is_active:
        raise refusal("inactive_user")
    ended = lineage.refuse_if_ended(token, subject=token.user, application=token.application)
    if ended is not None:
        raise refusal(ended)

    return VerifiedToken(
        token_type=token_type,
        user=token.user,
        client_id=token.application.client_id,
        scope=frozenset(token.scope.split()),
        expires=token.expires,
        authorization=lineage.of_access_token(token),
        own_authorization=lineage.own_authorization(token),
        **access_token_claims(token),
    )
