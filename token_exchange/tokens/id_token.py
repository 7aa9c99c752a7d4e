"""``urn:ietf:params:oauth:token-type:id_token``: an unexpired ID token this server issued.

The key is never chosen from the token: the unverified ``jti`` only finds DOT's IDToken row,
and the signature is then checked with that row's application key under that application's
algorithm alone. A forged or altered token fails the signature; a revoked one has no row.

An ID token is accepted only while the authorization it was issued with is alive. One issued
with an access token (it carries ``at_hash``: a login, a refresh, an exchange that also issued an
access token) needs that access token: revoking it or its refresh token (RFC 7009), logout with
``OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS`` and the client's own refresh delete it, so the ID
token of a revoked login, or an older one than the latest refresh issued, is refused; once it
has expired, its refresh token must still be usable. The access token and its refresh tokens
come in the same query as the ID token. An ID token issued alone (the implicit ``id_token``
response type, the front channel of a hybrid flow, an exchange for an ID token) has no access
token to ask. One that an exchange issued (with an access token or alone) is accepted only while
the root authorization it recorded lives (``lineage``; an annotation on the same query), and one
that is neither (the implicit ``id_token`` response type, the front channel of a hybrid flow)
names no authorization: the grant refuses it (``authorization_unknown``), failing closed.
"""

from __future__ import annotations

import datetime
import time
import uuid
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from oauth2_provider.models import get_access_token_model, get_id_token_model

from token_exchange.constants import SUBJECT_DATA_SCOPES
from token_exchange.db.lookups import unique_row
from token_exchange.exceptions import Refusal
from token_exchange.issuance import lineage
from token_exchange.jwt import jose
from token_exchange.tokens.base import VerifiedToken, exchanged_claims


def _audience_claim(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list) and all(isinstance(item, str) for item in aud):
        return aud
    return []


def _access_token_relation() -> tuple[str, str] | None:
    """How an ID token reaches the access token issued with it: the reverse side of the access
    token model's ``id_token``, as (``select_related`` name, attribute), or None when it has none.

    Its name is the access token model's ``related_name``: ``access_token`` for DOT's own, anything
    (or ``+``) for a swapped model (OAUTH2_PROVIDER_ACCESS_TOKEN_MODEL).
    """
    field = get_access_token_model()._meta.get_field("id_token")
    if (field.remote_field.related_name or "").endswith("+"):
        return None  # no reverse relation (Django's rule for a hidden one)
    return field.related_query_name(), field.remote_field.get_accessor_name()


def read_id_token(value: str, token_type: str, refusal: type[Refusal], *, issuer: str) -> VerifiedToken:
    try:
        _header, unverified = jose.peek(value)
        jti = uuid.UUID(str(unverified.get("jti", "")))
    except (jose.JoseError, ValueError) as exc:
        raise refusal("malformed_id_token") from exc

    relation = _access_token_relation()
    related = ["user", "application", "exchanged"]
    if relation is not None:
        related += [relation[0], *(f"{relation[0]}__{name}" for name in lineage.access_token_related())]
    rows = get_id_token_model().objects.select_related(*related).filter(jti=jti)
    row = unique_row(lineage.with_liveness(rows, prefix="exchanged__"))
    if row is None or row.application is None or row.user is None:
        raise refusal("unknown_token")
    application = row.application
    try:
        key = application.jwk_key
    except ImproperlyConfigured as exc:
        raise refusal("client_cannot_sign") from exc
    try:
        _header, claims = jose.verify(value, key, application.algorithm)
    except jose.JoseError as exc:
        raise refusal("bad_signature") from exc

    audience = _audience_claim(claims)
    exp = claims.get("exp")
    if claims.get("iss") != issuer:
        raise refusal("wrong_issuer")
    if claims.get("sub") != str(row.user.pk):
        raise refusal("wrong_subject")
    if application.client_id not in audience:
        raise refusal("wrong_audience")
    if not isinstance(exp, int) or isinstance(exp, bool) or exp <= time.time() or row.is_expired():
        raise refusal("expired_token")
    if not row.user.is_active:
        raise refusal("inactive_user")

    if relation is not None:
        linked = getattr(row, relation[1], None)
    else:
        linked = unique_row(get_access_token_model().objects.filter(id_token=row))
    if "at_hash" in claims and (linked is None or not lineage.access_token_alive(linked)):
        # Issued with an access token that was revoked, replaced by a refresh, or expired
        # beyond renewal: the login it proves has ended.
        raise refusal("authorization_ended")
    ended = lineage.refuse_if_ended(row, subject=row.user, application=application)
    if ended is not None:
        # An exchanged ID token, whose root authorization (the login it descends from) ended.
        raise refusal(ended)

    exchanged = getattr(row, "exchanged", None)
    if exchanged is not None:
        token_claims = exchanged_claims(exchanged)
    else:
        # DOT issued it at login, with an access token for the same authorization: that
        # token's RFC 8707 resource indicators belong to the ID token's audience too.
        resource = tuple(linked.resource or []) if linked is not None else ()
        token_claims = {
            "audience": tuple(dict.fromkeys([*audience, *resource])),
            "resource": resource,
            "reference": str(jti),
        }
    recorded = lineage.of(exchanged)
    if recorded is not None:
        authorization: lineage.Authorization | None = recorded.authorization
    else:
        authorization = lineage.own_authorization(linked) if linked is not None else None
    may_act = claims.get("may_act")
    return VerifiedToken(
        token_type=token_type,
        user=row.user,
        client_id=application.client_id,
        # An ID token says who the user is; it authorizes nothing beyond the subject data.
        scope=frozenset(row.scope.split()) & SUBJECT_DATA_SCOPES,
        expires=min(row.expires, datetime.datetime.fromtimestamp(exp, tz=datetime.timezone.utc)),
        may_act=may_act if isinstance(may_act, dict) else None,
        # Acting with an ID token is acting with the authorization of its access token; an
        # exchanged one's is the root it recorded.
        authorization=authorization,
        own_authorization=lineage.own_authorization(linked) if linked is not None else None,
        **token_claims,
    )
