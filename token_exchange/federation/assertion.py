"""Verifying one token of a trusted issuer, in the order that costs an attacker most and us least.

1. its shape, and the unverified ``iss``, only to find the row: an issuer the client's policy
   names, enabled (one query); no row, no further work;
2. the header (``rules.header_refusal``): an ``alg`` the row pins, no key in the header;
3. its kind (``rules.kind``/``kind_refusal``): what it was presented as agrees with its ``typ``,
   and the row accepts that kind;
4. the key (``jwks.key_for``): the row's, by ``kid``; never another issuer's, never the header's;
5. the signature, under exactly the header's ``alg`` (``jose.verify``);
6. the claims (``rules.claims_refusal``).

Who the subject is here is ``identities``' question, asked afterwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from token_exchange.conf import token_exchange_settings
from token_exchange.federation import jwks, rules
from token_exchange.jwt import jose
from token_exchange.models import TrustedIssuer
from token_exchange.parameters import storable


class FederationRefusal(Exception):
    """A trusted issuer's token is refused; ``reason`` goes to the log and the audit row. When the
    token was verified (refused for whom it names), ``verified`` says whose it was."""

    def __init__(self, reason: str, verified: VerifiedExternalToken | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.verified = verified


@dataclass(frozen=True)
class VerifiedExternalToken:
    """A trusted issuer's token, signature and claims verified."""

    trust: TrustedIssuer
    kind: str
    claims: dict[str, Any]

    @property
    def subject(self) -> str:
        sub: str = self.claims["sub"]
        return sub

    def described(self) -> dict[str, str]:
        """What the audit row says about it: the issuer and the subject, never the token."""
        return {"iss": self.trust.issuer, "sub": self.subject}


def for_client(client: Any, iss: str) -> TrustedIssuer | None:
    """The enabled trusted issuer ``iss`` (exactly) that ``client``'s policy names, or None: one
    query. An issuer the client's policy does not name is no issuer at all for this client."""
    found: TrustedIssuer | None = TrustedIssuer.objects.filter(
        issuer=iss, enabled=True, client_policies__application=client
    ).first()
    return found


def unverified_issuer(value: str) -> str | None:
    """The ``iss`` a compact JWS says it has, unverified (to route it, never to trust it)."""
    try:
        _header, claims = jose.peek(value)
    except jose.JoseError:
        return None
    iss = claims.get("iss")
    return iss if isinstance(iss, str) else None


def verify(
    value: str,
    *,
    client: Any,
    presented_as: str,
    audiences: tuple[str, ...] | None = None,
    max_lifetime: int | None = None,
    jti_required: bool = False,
) -> VerifiedExternalToken:
    """``value``, a token of an issuer ``client`` may present tokens of, verified; else
    :class:`FederationRefusal`. ``audiences``: what its ``aud`` must name instead of the row's
    (the JWT authorization grant: this server); ``max_lifetime``: a tighter ``exp - iat`` bound."""
    try:
        header, unverified = jose.peek(value)
    except jose.JoseError:
        raise FederationRefusal("malformed_jwt") from None
    iss = unverified.get("iss")
    # Compared with a column: never a NUL byte or a lone surrogate (a 503 or a 500 otherwise).
    trust = for_client(client, iss) if isinstance(iss, str) and iss and storable(iss) else None
    if trust is None:
        # The reason our own readers give for an iss they do not accept: to this client, this iss
        # is nobody's it may present.
        raise FederationRefusal("wrong_issuer")
    reason = rules.header_refusal(header, algorithms=trust.algorithms)
    kind = rules.kind(presented_as=presented_as, typ=header.get("typ"))
    reason = reason or rules.kind_refusal(
        kind_presented=kind,
        accept_id_tokens=trust.accept_id_tokens,
        accept_access_tokens=trust.accept_access_tokens,
        accept_jwts=trust.accept_jwts,
    )
    if reason is not None:
        raise FederationRefusal(reason)
    assert kind is not None
    key = jwks.key_for(trust, kid=header.get("kid"), alg=header["alg"])
    if isinstance(key, str):
        raise FederationRefusal(key)
    try:
        _header, claims = jose.verify(value, key, header["alg"])
    except jose.JoseError:
        raise FederationRefusal("bad_signature") from None
    lifetime = trust.max_token_lifetime_seconds
    reason = rules.claims_refusal(
        claims,
        issuer=trust.issuer,
        audiences=audiences if audiences is not None else tuple(trust.audiences),
        required=trust.required_claims or {},
        now=time.time(),
        leeway=token_exchange_settings.JWT_LEEWAY_SECONDS,
        max_age=trust.max_token_age_seconds,
        max_lifetime=min(lifetime, max_lifetime) if max_lifetime is not None else lifetime,
        jti_required=jti_required,
        kind_presented=kind,
    )
    if reason is not None:
        raise FederationRefusal(reason)
    return VerifiedExternalToken(trust=trust, kind=kind, claims=claims)
