"""A trusted issuer's token as a subject: its ID token, RFC 9068 access token or other JWT.

The token is verified against its issuer's rules (``federation.assertion``), then mapped to a
local user (``federation.identities``). What it says about scope and audience is the other
domain's and means nothing here: the issued tokens get what the issuer's row allows
(``TrustedIssuer.scope``, less what the client may not hold) for the requesting client, or for
one of the row's ``resources``, with this server's lifetimes. They carry no ``act`` (a token
with one is refused) and are their own authorization: revoking them, or withdrawing the link or
the issuer, ends them and what was exchanged from them.
"""

from __future__ import annotations

from typing import Any

from token_exchange.exceptions import Refusal
from token_exchange.federation import identities
from token_exchange.federation.assertion import FederationRefusal, VerifiedExternalToken, verify
from token_exchange.tokens.base import Federated, VerifiedToken


def refused(refusal: type[Refusal], error: FederationRefusal) -> Refusal:
    """``refusal`` with the reason, and, when the token was verified, whose it was (the audit row
    names the external issuer and subject)."""
    exc = refusal(error.reason)
    exc.external = error.verified.described() if error.verified is not None else None
    return exc


def read_external(value: str, token_type: str, refusal: type[Refusal], *, client: Any) -> VerifiedToken:
    """The verified token and the user it stands for; else ``refusal``. A token refused for whom
    it names (unlinked, inactive, an admin) carries what the token says besides
    (``presented``), so the grant builds the terms before it answers, as for a named subject:
    ``invalid_scope`` cannot tell a linked subject from another."""
    try:
        token = verify(value, client=client, presented_as=token_type)
    except FederationRefusal as error:
        raise refused(refusal, error) from error
    try:
        user, link = identities.user_of(token)
    except FederationRefusal as error:
        exc = refused(refusal, error)
        exc.presented = verified_token(token, token_type, user=None, link=None, client=client)
        raise exc from error
    return verified_token(token, token_type, user=user, link=link, client=client)


def verified_token(
    token: VerifiedExternalToken, token_type: str, *, user: Any, link: Any, client: Any
) -> VerifiedToken:
    trust = token.trust
    jti = token.claims.get("jti")
    link_id = link.pk if link is not None else 0
    return VerifiedToken(
        token_type=token_type,
        user=user,
        client_id=None,  # not one of this server's clients
        scope=frozenset((trust.scope or "").split()),
        audience=tuple(dict.fromkeys([client.client_id, *trust.resources])),
        default_audience=(client.client_id,),
        resource=(),
        expires=None,  # this server's lifetimes: the other domain's exp bounded the token's use
        reference=f"external:{link_id}:{jti}"
        if isinstance(jti, str) and len(jti) <= 64
        else f"external:{link_id}",
        federated=Federated(issuer=trust.issuer, subject=token.subject, identity_id=link_id),
    )
