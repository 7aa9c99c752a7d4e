"""``urn:ietf:params:oauth:token-type:jwt`` as a subject: a JWT the requesting client signed.

ZITADEL's "impersonation by JWT profile": the client states whom its actor acts for by signing
``{"iss": client_id, "sub": user pk, "aud": issuer, "iat", "exp", "jti"}`` with one of its
``ClientKey`` rows. Like a bare user id it proves nothing about the user's consent, so the grant
accepts it only beside an actor token, and the impersonation rules decide. Its audience names
this server, not the token to issue: the issued audience comes from the actor token. Its
``exp`` bounds the JWT's own use (at most an hour, ``jti`` once), not the issued token's
lifetime, which the actor token and ``IMPERSONATION_TOKEN_EXPIRE_SECONDS`` bound.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from token_exchange.exceptions import Refusal
from token_exchange.jwt import signed_jwt
from token_exchange.tokens.base import VerifiedToken
from token_exchange.tokens.user_id import read_user_id

# A client assertion says typ "client-authentication+jwt" when it says anything: not accepted.
SUBJECT_TYP = frozenset({"jwt"})


def read_self_signed_jwt(
    value: str, token_type: str, refusal: type[Refusal], *, issuer: str, client: Any
) -> VerifiedToken:
    try:
        claims = signed_jwt.verify(value, application=client, audiences={issuer}, allowed_typ=SUBJECT_TYP)
    except signed_jwt.JWTRefusal as exc:
        raise refusal(exc.reason) from exc
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise refusal("malformed_user_id")
    if sub == client.client_id:
        # A client assertion (sub = iss = client_id) is not a statement about a user.
        raise refusal("subject_is_client")
    # Then exactly a user id: no scope, no audience, no expiry of its own.
    named = read_user_id(sub, token_type, refusal)
    return dataclasses.replace(named, reference=f"jwt:{client.client_id}:{claims['jti']}")
