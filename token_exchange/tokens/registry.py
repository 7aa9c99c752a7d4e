"""Which reader handles which RFC 8693 token type identifier."""

from __future__ import annotations

from typing import Any

from token_exchange.constants import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TYPE, USER_ID_TYPE
from token_exchange.exceptions import Refusal
from token_exchange.tokens.access_token import read_access_token
from token_exchange.tokens.base import VerifiedToken
from token_exchange.tokens.id_token import read_id_token
from token_exchange.tokens.jwt import read_self_signed_jwt
from token_exchange.tokens.user_id import read_user_id


def read_token(
    token_type: str, value: str, refusal: type[Refusal], *, issuer: str, client: Any
) -> VerifiedToken:
    """Verify ``value``, presented by ``client`` as a ``token_type``, or raise ``refusal``."""
    if token_type == ACCESS_TOKEN_TYPE:
        return read_access_token(value, token_type, refusal)
    if token_type == ID_TOKEN_TYPE:
        return read_id_token(value, token_type, refusal, issuer=issuer)
    if token_type == USER_ID_TYPE:
        return read_user_id(value, token_type, refusal)
    if token_type == JWT_TYPE:
        # Only the client's own JWTs: the grant allows this type as a subject beside an actor.
        return read_self_signed_jwt(value, token_type, refusal, issuer=issuer, client=client)
    raise refusal("unsupported_token_type")
