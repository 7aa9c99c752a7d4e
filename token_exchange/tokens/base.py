from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.contrib.auth.base_user import AbstractBaseUser

from token_exchange.issuance import lineage
from token_exchange.issuance.lineage import Authorization, Lineage

if TYPE_CHECKING:
    from token_exchange.models import ExchangedToken


@dataclass(frozen=True)
class Federated:
    """A presented token of a trusted issuer: whose it was, and the link it was mapped by."""

    issuer: str  # the external iss
    subject: str  # the external sub
    identity_id: int  # the FederatedIdentity


@dataclass(frozen=True)
class VerifiedToken:
    """What the grant knows about a presented token once it has been verified.

    ``audience`` follows one definition throughout this package: a token's RFC 8707 resource
    indicators plus the client_id it was issued to, or, for a token minted by an exchange,
    exactly the audience that exchange issued. ``resource`` is the part DOT's resource servers
    enforce; empty means unrestricted.
    """

    token_type: str  # the RFC 8693 identifier it was presented as
    user: AbstractBaseUser
    client_id: str | None  # the client the token was issued to; None for a bare user id
    scope: frozenset[str]
    audience: tuple[str, ...]
    resource: tuple[str, ...]
    expires: datetime.datetime | None  # None: not a token, no expiry of its own (a user id)
    reference: str  # a loggable identifier (a jti or a row id), never the token itself
    act: dict[str, Any] | None = None
    may_act: dict[str, Any] | None = None
    impersonation_id: int | None = None  # the admin-started ImpersonationSession it was issued under
    # An exchanged token's lineage: the root and other authorizations it lives by, as recorded
    # (token_exchange.issuance.lineage); None for a token DOT issued at login, or a named user.
    lineage: Lineage | None = None
    # The root authorization it descends from: for a login token its refresh-token family or
    # itself, for an exchanged token the root it recorded; None when it cannot be determined.
    authorization: Authorization | None = None
    # Its own authorization (family or itself), which revoking it ends; None for a named user.
    own_authorization: Authorization | None = None
    # A trusted issuer's token (token_exchange.federation): the tokens issued for it are their
    # own authorization, and its link's removal revokes them.
    federated: Federated | None = None
    # What an exchange without audience or resource parameters issues for, when narrower than
    # ``audience`` (a trusted issuer's token: the requesting client; its resources on request).
    default_audience: tuple[str, ...] | None = None


def native_audience(resource: list[str] | None, client_id: str) -> tuple[str, ...]:
    """The audience of a token DOT issued: its resource indicators plus its client."""
    return tuple(dict.fromkeys([*(resource or []), client_id]))


def exchanged_claims(row: ExchangedToken) -> dict[str, Any]:
    """The audience, resource, act and reference an exchange stored for one of its tokens."""
    return {
        "audience": tuple(row.audience),
        "resource": tuple(row.resource),
        "act": row.act,
        "reference": row.jti,
        "impersonation_id": row.impersonation_id,
        "lineage": lineage.of(row),
    }


def access_token_claims(token: Any) -> dict[str, Any]:
    """audience, resource, act and reference of one of DOT's AccessToken rows.

    Select ``exchanged`` with the token (``select_related("application", "exchanged")``) to
    keep this free of queries.
    """
    exchanged = getattr(token, "exchanged", None)
    if exchanged is not None:
        return exchanged_claims(exchanged)
    client_id = token.application.client_id if token.application is not None else None
    return {
        "audience": native_audience(token.resource, client_id) if client_id else tuple(token.resource or []),
        "resource": tuple(token.resource or []),
        "act": None,
        "reference": f"access_token:{token.pk}",
        "impersonation_id": None,
        "lineage": None,
    }
