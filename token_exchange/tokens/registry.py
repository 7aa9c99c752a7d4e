"""Which reader handles which RFC 8693 token type identifier, and whose token it is.

A JWT names its issuer. One that names this server (or, as a ``jwt``, the requesting client) is
read by this server's readers, against this server's rows and keys; one that names anybody else
goes to the trusted issuers' reader, against that issuer's row and keys only (``route``). So an
external token can never be read as ours (its ``iss`` is not ours, and our readers check it),
nor ours as external (our ``iss`` is never a trusted issuer's: the route decides before any
trusted issuer is looked up).
"""

from __future__ import annotations

from typing import Any

from token_exchange.constants import ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TYPE, USER_ID_TYPE
from token_exchange.exceptions import Refusal
from token_exchange.federation.assertion import unverified_issuer
from token_exchange.tokens.access_token import read_access_token
from token_exchange.tokens.base import VerifiedToken
from token_exchange.tokens.external import read_external
from token_exchange.tokens.id_token import read_id_token
from token_exchange.tokens.jwt import read_self_signed_jwt
from token_exchange.tokens.user_id import read_user_id

OURS = "ours"
EXTERNAL = "external"
FEDERATED_TYPES = frozenset({ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TYPE})


def route(*, token_type: str, iss: str | None, issuer: str, client_id: str, beside_actor: bool) -> str:
    """Whose reader a subject token goes to: :data:`EXTERNAL` when it is a JWT of a type a trusted
    issuer may present and its (unverified) ``iss`` is neither this server nor the requesting
    client; else :data:`OURS`, whose readers refuse it unless it is really ours. A ``jwt`` beside
    an actor token is the client's own (``tokens.jwt``, an impersonation by JWT profile). Pure."""
    if token_type not in FEDERATED_TYPES or iss is None or iss in (issuer, client_id):
        return OURS
    if token_type == JWT_TYPE and beside_actor:
        return OURS
    return EXTERNAL


def is_external(token_type: str, value: str, *, issuer: str, client_id: str, beside_actor: bool) -> bool:
    iss = unverified_issuer(value) if token_type in FEDERATED_TYPES else None
    found = route(
        token_type=token_type, iss=iss, issuer=issuer, client_id=client_id, beside_actor=beside_actor
    )
    return found == EXTERNAL


def read_token(
    token_type: str,
    value: str,
    refusal: type[Refusal],
    *,
    issuer: str,
    client: Any,
    external: bool = False,
) -> VerifiedToken:
    """Verify ``value``, presented by ``client`` as a ``token_type``, or raise ``refusal``.

    ``external``: it is a trusted issuer's (``route`` said so, for a subject token); else it is
    read as this server's, whose readers refuse any ``iss`` but this server's (or the client's).
    """
    if external:
        return read_external(value, token_type, refusal, client=client)
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
