"""Builds, signs and stores the tokens an exchange issues.

Called with a decision already made (:class:`Issuance`); it decides nothing. Every token it
creates is a row of DOT's own tables, JWTs included, so introspection, revocation, DOT's
resource-server checks and the refresh grant treat exchanged tokens like any other. The
RFC 8693 extras (audience, ``act``, ``jti``) go into one ``ExchangedToken`` row per token, with
its lineage: the root authorization it lives by, and the others it depends on (``lineage``).
Those rows, and DOT's token rows, are written by ``audit.issued`` in one statement with the
audit rows that name them (on PostgreSQL; ``inserts.save_together``).
The readers refused any presented token whose lineage had ended.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import router, transaction
from django.db.models import Model
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_id_token_model,
    get_refresh_token_model,
    set_token_value,
)
from oauth2_provider.settings import oauth2_settings

from token_exchange.constants import (
    ACT,
    BEARER,
    ID_TOKEN_TYPE,
    JWT_ACCESS_TOKEN_TYP,
    JWT_TYPE,
    NOT_APPLICABLE,
    REFRESH_TOKEN_TYPE,
)
from token_exchange.issuance import audit, lineage
from token_exchange.issuance.lineage import Descent
from token_exchange.jwt import jose
from token_exchange.models import ExchangedToken


@dataclass(frozen=True)
class Issuance:
    """Everything the grant and the policy decided about the tokens to issue."""

    client: Any  # DOT's (swappable) Application
    user: AbstractBaseUser
    requested_token_type: str
    scope: frozenset[str]
    audience: tuple[str, ...]
    resource: tuple[str, ...]  # what DOT's RFC 8707 checks enforce; empty = unrestricted
    expires_in: int
    issue_refresh_token: bool
    issue_id_token: bool
    issuer: str
    subject_claims: dict[str, Any]  # OIDC claims about the user (sub, profile, email), by scope
    audit_context: audit.AuditContext
    act: dict[str, Any] | None = None
    impersonation_id: int | None = None  # the admin-started ImpersonationSession, kept on every token
    # The authorizations the tokens will live by: lineage.descent(subject=..., actor=...); None
    # only under an admin-started impersonation (the session rules the tokens).
    lineage: Descent | None = None
    # Issued for a trusted issuer's token: the FederatedIdentity it was mapped by.
    federated_identity_id: int | None = None


def _epoch(moment: datetime.datetime) -> int:
    return int(moment.timestamp())


def _scope_string(scope: frozenset[str]) -> str:
    return " ".join(sorted(scope))


def _at_hash(access_token: str) -> str:
    """OIDC Core §3.1.3.6: left half of the SHA-256 of the access token, base64url."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).decode("ascii").rstrip("=")


def _jwt_access_token(
    issuance: Issuance, *, jti: str, now: datetime.datetime, expires: datetime.datetime
) -> str:
    """An RFC 9068 access token, signed with DOT's OIDC key under the kid its JWKS publishes."""
    key = jose.server_key(oauth2_settings.OIDC_RSA_PRIVATE_KEY)
    claims: dict[str, Any] = {
        "iss": issuance.issuer,
        "sub": str(issuance.user.pk),
        "aud": list(issuance.audience),
        "exp": _epoch(expires),
        "iat": _epoch(now),
        "nbf": _epoch(now),
        "jti": jti,
        "client_id": issuance.client.client_id,
        "scope": _scope_string(issuance.scope),
    }
    if issuance.act is not None:
        claims[ACT] = issuance.act
    return jose.sign(claims, key, "RS256", typ=JWT_ACCESS_TOKEN_TYP, kid=key.thumbprint())


def _id_token(
    issuance: Issuance,
    *,
    now: datetime.datetime,
    expires: datetime.datetime,
    access_token: str | None,
) -> tuple[str, Any]:
    """An OIDC ID token signed the way DOT signs the client's ID tokens, and its IDToken row
    (not stored yet: ``_audit`` writes it)."""
    client = issuance.client
    jti = uuid.uuid4()
    audience = list(dict.fromkeys([client.client_id, *issuance.audience]))
    claims: dict[str, Any] = {
        **issuance.subject_claims,
        "iss": issuance.issuer,
        "sub": str(issuance.user.pk),
        "aud": audience[0] if len(audience) == 1 else audience,
        "exp": _epoch(expires),
        "iat": _epoch(now),
        "jti": str(jti),
        "azp": client.client_id,
        "client_id": client.client_id,
    }
    last_login = getattr(issuance.user, "last_login", None)
    if last_login is not None:
        claims["auth_time"] = _epoch(last_login)
    if access_token is not None:
        claims["at_hash"] = _at_hash(access_token)
    if issuance.act is not None:
        claims[ACT] = issuance.act
    key = client.jwk_key
    kid = key.thumbprint() if client.algorithm == "RS256" else None
    value = jose.sign(claims, key, client.algorithm, typ="JWT", kid=kid)
    row = get_id_token_model()(
        user=issuance.user,
        application=client,
        jti=jti,
        expires=expires,
        scope=_scope_string(issuance.scope),
    )
    return value, row


def _record(
    issuance: Issuance, issued_token_type: str, lineage_fields: dict[str, Any], **token: Any
) -> ExchangedToken:
    return ExchangedToken(
        jti=uuid.uuid4().hex,
        issued_token_type=issued_token_type,
        audience=list(issuance.audience),
        resource=list(issuance.resource),
        act=issuance.act,
        impersonation_id=issuance.impersonation_id,
        federated_identity_id=issuance.federated_identity_id,
        **lineage_fields,
        **token,
    )


def mint(
    issuance: Issuance,
    *,
    new_access_token: Callable[[], str],
    new_refresh_token: Callable[[], str],
) -> dict[str, Any]:
    """Create and store the tokens; return the RFC 8693 §2.2.1 response body.

    All rows, the audit rows included, are written in one transaction: either every token of
    the response and its audit trail exist, or none does.
    """
    now = timezone.now()
    expires = now + datetime.timedelta(seconds=issuance.expires_in)
    response: dict[str, Any] = {
        "issued_token_type": issuance.requested_token_type,
        "expires_in": issuance.expires_in,
        "scope": _scope_string(issuance.scope),
    }
    using = router.db_for_write(get_access_token_model())
    # No savepoint of its own: inside the token request's transaction a failing write rolls the
    # whole request back. (An admin-started impersonation's session row was locked by the
    # grant's decision, before any token row is written here.)
    with transaction.atomic(using=using, savepoint=False):
        lineage_fields = lineage.issue(issuance.lineage, using=using) if issuance.lineage else {}
        _store(
            issuance,
            response,
            lineage_fields,
            now=now,
            expires=expires,
            new_access_token=new_access_token,
            new_refresh_token=new_refresh_token,
            using=using,
        )
    return response


def _store(
    issuance: Issuance,
    response: dict[str, Any],
    lineage_fields: dict[str, Any],
    *,
    now: datetime.datetime,
    expires: datetime.datetime,
    new_access_token: Callable[[], str],
    new_refresh_token: Callable[[], str],
    using: str,
) -> None:
    """Write the token rows, their ``ExchangedToken`` rows and the audit rows; fill ``response``."""
    if issuance.requested_token_type == ID_TOKEN_TYPE:
        # RFC 8693 §2.2.1: the ID token travels in access_token and is no bearer token.
        id_token, id_row = _id_token(issuance, now=now, expires=expires, access_token=None)
        record = _record(issuance, ID_TOKEN_TYPE, lineage_fields, id_token=id_row)
        _audit(issuance, [record], [id_row], using)
        response.update(access_token=id_token, token_type=NOT_APPLICABLE)
        return

    AccessToken = get_access_token_model()
    # Written by _audit in this order, each after the rows it points at.
    token_rows: list[Model] = []
    records: list[ExchangedToken] = []
    record = _record(issuance, issuance.requested_token_type, lineage_fields)
    if issuance.requested_token_type == JWT_TYPE:
        access_token = _jwt_access_token(issuance, jti=record.jti, now=now, expires=expires)
    else:
        access_token = new_access_token()
    id_row = None
    if issuance.issue_id_token:
        id_token, id_row = _id_token(issuance, now=now, expires=expires, access_token=access_token)
        token_rows.append(id_row)
        records.append(_record(issuance, ID_TOKEN_TYPE, lineage_fields, id_token=id_row))
        response["id_token"] = id_token

    token_row = AccessToken(
        user=issuance.user,
        application=issuance.client,
        scope=_scope_string(issuance.scope),
        expires=expires,
        id_token=id_row,
        resource=list(issuance.resource),
    )
    set_token_value(token_row, access_token)
    token_rows.append(token_row)
    record.access_token = token_row
    records.append(record)
    response.update(access_token=access_token, token_type=BEARER)

    refresh_row: Any = None
    if issuance.issue_refresh_token:
        refresh_token = new_refresh_token()
        refresh_row = get_refresh_token_model()(
            user=issuance.user,
            application=issuance.client,
            access_token=token_row,
            token_family=uuid.uuid4(),
            resource=list(issuance.resource),
        )
        set_token_value(refresh_row, refresh_token)
        token_rows.append(refresh_row)
        records.append(_record(issuance, REFRESH_TOKEN_TYPE, lineage_fields, refresh_token=refresh_row))
        response["refresh_token"] = refresh_token

    if issuance.lineage is not None and issuance.lineage.root is None:
        # Their own authorization (lineage.Descent): the refresh token's family, else the access
        # token itself, as for a login's tokens.
        own: dict[str, Any] = (
            {"actor_token_family": refresh_row.token_family}
            if refresh_row is not None
            else {"actor_access_token": token_row}
        )
        for each in records:
            for name, value in own.items():
                setattr(each, name, value)

    _audit(issuance, records, token_rows, using)


def _audit(issuance: Issuance, records: list[ExchangedToken], token_rows: list[Model], using: str) -> None:
    """The audit rows, written with ``records`` and ``token_rows`` (none stored yet) in one
    statement where the database can (``inserts.save_together``)."""
    audit.issued(
        issuance.audit_context,
        tokens=records,
        issued_token_type=issuance.requested_token_type,
        scope=_scope_string(issuance.scope),
        audience=issuance.audience,
        expires_in=issuance.expires_in,
        act=issuance.act,
        using=using,
        token_rows=token_rows,
    )
