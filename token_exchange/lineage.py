"""Which actor authorization each impersonated token descends from, and what ends with it.

An impersonation lives only as long as the authorization of its actor. That authorization is
not the actor token itself, which a routine refresh replaces every hour, but what the refresh
carries on: the actor token's **refresh-token family** (DOT's ``RefreshToken.token_family``,
shared by every rotation), found from the access token's own refresh token or the refresh token
it was refreshed from. An actor token without a refresh token is its own authorization (its
row, by primary key). An actor ID token stands for the authorization of the access token issued
with it.

Every ``ExchangedToken`` with ``act`` that an actor token produced records that authorization
(``actor_token_family`` or ``actor_access_token``). A refresh and a re-exchange copy it. A
nested impersonation (an impersonated subject plus a new actor) records the new actor's and
keeps the older actors' as ``ActorAuthorization`` rows under a ``lineage`` key that its tokens
share, written once. Tokens of an admin-started impersonation live by their
``ImpersonationSession`` instead (``impersonation_sessions``); an impersonated token with
neither (issued before this was recorded) has no authorization left and is refused.

The authorization is **alive** while its family has a refresh token that is not revoked, still
has its access token and, with ``REFRESH_TOKEN_EXPIRE_SECONDS``, has not expired (what DOT's
``validate_refresh_token`` accepts); or, without a family, while the actor's access token exists
and has not expired. The actor's own refresh keeps it alive (the family goes on); revoking the
actor's access or refresh token (RFC 7009), RP-initiated logout with
``OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS``, revoking the family (reuse detection) and expiry
end it. Whether the actor may still act at all (active, still an impersonator) is
``impersonation.recheck``'s question, asked first.

What ends with it, and when:

* eagerly, in the transaction of the revocation, where DOT has a hook: the RFC 7009 endpoint
  (``TokenExchangeValidator.revoke_token``) and deactivating the actor (``post_save`` of the
  user model, below) revoke everything descending from the authorization (:func:`cascade`) and
  write one ``tokens.revoked`` audit row;
* lazily everywhere a token is used again: a refresh (``validator.validate_refresh_token``) and
  a re-exchange or nested impersonation (``minting``) of a token whose lineage ended are refused
  and revoke what hangs off the ended authorization. Logout, reuse detection and expiry have no
  hook; they are found here.

A resource server that accepts the impersonated token itself (a JWT checked offline, or
introspection while the access token row exists) sees it until its own ``exp``, at most
``IMPERSONATION_TOKEN_EXPIRE_SECONDS``: the cascade deletes the rows, so introspection says
inactive at once, but a signature stays valid.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import router, transaction
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, QuerySet
from django.db.models.signals import post_save
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_refresh_token_model,
    refresh_token_expire_timedelta,
)

from . import audit, revocation
from .models import ActorAuthorization, ExchangedToken

ACTOR_DEACTIVATED = "actor_deactivated"
ACTOR_TOKEN_REVOKED = "actor_token_revoked"
AUTHORIZATION_ENDED = "actor_authorization_ended"


@dataclass(frozen=True)
class Authorization:
    """One actor authorization: a refresh-token family, or else one access token (its pk)."""

    token_family: uuid.UUID | None = None
    access_token_id: Any = None

    def fields(self) -> dict[str, Any]:
        return {"actor_token_family": self.token_family, "actor_access_token_id": self.access_token_id}


@dataclass(frozen=True)
class Lineage:
    """What an impersonated token descends from, as its ``ExchangedToken`` (``record_id``) says."""

    record_id: int
    authorization: Authorization
    inherited: uuid.UUID | None = None  # the ActorAuthorization rows of the older actors

    def fields(self) -> dict[str, Any]:
        return {**self.authorization.fields(), "lineage": self.inherited}


@dataclass(frozen=True)
class Descent:
    """The lineage the tokens about to be issued will have.

    ``subject``: the lineage of an impersonated subject token, which must still be alive and which
    the new tokens keep; ``actor``: the authorization of a new actor token.
    """

    subject: Lineage | None
    actor: Authorization | None


def descent(*, subject: Any, actor: Any = None) -> Descent | None:
    """The :class:`Descent` of an exchange of the verified ``subject`` (with ``actor``, the
    verified actor token of an impersonation); None when the tokens have no actor."""
    authorization = getattr(actor, "authorization", None) if actor is not None else None
    subject_lineage = getattr(subject, "lineage", None)
    if subject_lineage is None and authorization is None:
        return None
    return Descent(subject=subject_lineage, actor=authorization)


# Reading the authorization of a presented token -------------------------------------------------


def refresh_token_relation() -> tuple[str, str] | None:
    """How an access token reaches its refresh token: the reverse side of the refresh token
    model's ``access_token``, as (``select_related`` name, attribute), or None when it has none
    (``refresh_token`` for DOT's own model; anything, or ``+``, for a swapped one)."""
    field = get_refresh_token_model()._meta.get_field("access_token")
    if (field.remote_field.related_name or "").endswith("+"):
        return None
    return field.related_query_name(), field.remote_field.get_accessor_name()


def access_token_related() -> list[str]:
    """What to ``select_related`` with an access token so that :func:`of_access_token` and
    :func:`access_token_alive` run no query."""
    relation = refresh_token_relation()
    return [*([relation[0]] if relation else []), "source_refresh_token"]


def _refresh_token(access_token: Any) -> Any:
    relation = refresh_token_relation()
    if relation is not None:
        return getattr(access_token, relation[1], None)
    return get_refresh_token_model().objects.filter(access_token=access_token).first()


def of_access_token(access_token: Any) -> Authorization:
    """The authorization an access token belongs to: its refresh-token family, found from its own
    refresh token or the one it was refreshed from, or else the token itself."""
    for refresh_token in (_refresh_token(access_token), access_token.source_refresh_token):
        family = getattr(refresh_token, "token_family", None)
        if family is not None:
            return Authorization(token_family=family)
    return Authorization(access_token_id=access_token.pk)


def _refresh_token_live(refresh_token: Any) -> bool:
    """DOT's ``validate_refresh_token`` on a refresh token row: not revoked, not an orphan, and
    within ``REFRESH_TOKEN_EXPIRE_SECONDS`` of its access token's expiry."""
    if refresh_token is None or refresh_token.revoked is not None or refresh_token.access_token_id is None:
        return False
    delta = refresh_token_expire_timedelta()
    return not delta or refresh_token.access_token.expires + delta > timezone.now()


def access_token_alive(access_token: Any) -> bool:
    """Is the authorization of an access token row that still exists alive? While it has not
    expired, or while its refresh token can still renew it. (Revoking either deletes the access
    token: a row that is gone is an authorization that ended.)"""
    return not access_token.is_expired() or _refresh_token_live(_refresh_token(access_token))


def of(record: ExchangedToken | None) -> Lineage | None:
    """The lineage a stored impersonated token carries, or None: not impersonated, or issued
    under an admin-started impersonation (its session rules it)."""
    if record is None or record.act is None:
        return None
    authorization = Authorization(
        token_family=record.actor_token_family, access_token_id=record.actor_access_token_id
    )
    if record.impersonation_id is not None and authorization == Authorization():
        return None
    return Lineage(record_id=record.pk, authorization=authorization, inherited=record.lineage)


# Is a lineage alive? --------------------------------------------------------------------------


def _authorization_alive() -> Q:
    """Q on a row with ``actor_token_family`` and ``actor_access_token`` columns (an
    ``ExchangedToken`` or an ``ActorAuthorization``): its authorization is alive."""
    now = timezone.now()
    live_refresh_tokens = get_refresh_token_model().objects.filter(
        token_family=OuterRef("actor_token_family"), revoked__isnull=True, access_token__isnull=False
    )
    delta = refresh_token_expire_timedelta()
    if delta:
        live_refresh_tokens = live_refresh_tokens.filter(access_token__expires__gt=now - delta)
    live_access_token = get_access_token_model().objects.filter(
        pk=OuterRef("actor_access_token"), expires__gt=now
    )
    return Q(Q(actor_token_family__isnull=False), Exists(live_refresh_tokens)) | Q(
        Q(actor_token_family__isnull=True), Exists(live_access_token)
    )


def alive_q() -> Q:
    """Q on ``ExchangedToken``: the token's actor authorization and every older actor's are alive.

    A row without any (an impersonated token from before lineage was recorded) is not."""
    ended_ancestors = ActorAuthorization.objects.filter(lineage=OuterRef("lineage")).exclude(
        _authorization_alive()
    )
    return Q(_authorization_alive(), ~Exists(ended_ancestors))


def with_liveness(queryset: QuerySet[ExchangedToken]) -> QuerySet[ExchangedToken]:
    """``queryset`` with ``lineage_alive`` on each row, so :func:`alive` runs no query."""
    return queryset.annotate(lineage_alive=ExpressionWrapper(alive_q(), output_field=BooleanField()))


def alive(lineage: Lineage, record: ExchangedToken | None = None, *, using: str | None = None) -> bool:
    """Is ``lineage`` alive? Free when ``record`` was read :func:`with_liveness`; one query
    otherwise. A record that is gone meanwhile is not alive."""
    annotated = getattr(record, "lineage_alive", None) if record is not None else None
    if annotated is not None:
        return bool(annotated)
    records = ExchangedToken.objects.using(using or router.db_for_write(ExchangedToken))
    return records.filter(pk=lineage.record_id).filter(alive_q()).exists()


# What ends with an authorization -------------------------------------------------------------


def _descends_from(families: Any, access_tokens: Any) -> Q:
    """Q on ``ExchangedToken``: descends from one of these families or access tokens (values or
    subqueries), as its own actor's authorization or an older actor's."""
    named = Q(actor_token_family__in=families) | Q(actor_access_token__in=access_tokens)
    return named | Q(lineage__in=ActorAuthorization.objects.filter(named).values("lineage"))


def cascade(
    *,
    families: Any = (),
    access_tokens: Any = (),
    reason: str,
    only_ended: bool = True,
    actor: Any = None,
    subject: Any = None,
    application: Any = None,
    client_ip: str | None = None,
) -> dict[str, int]:
    """Revoke every token descending from these authorizations (with ``only_ended``, those whose
    lineage has ended: an authorization named here that is still alive keeps its tokens) and
    write one ``tokens.revoked`` row when anything was revoked. One transaction, joined if the
    caller has one (the revocation's own)."""
    using = router.db_for_write(get_access_token_model())
    with transaction.atomic(using=using):
        records = ExchangedToken.objects.using(using).filter(_descends_from(families, access_tokens))
        if only_ended:
            records = records.exclude(alive_q())
        pks = list(records.values_list("pk", flat=True))
        if not pks:
            return {}
        revoked = revocation.revoke_issued(pk__in=pks)
        if any(revoked.values()):
            audit.tokens_revoked(
                reason=reason,
                revoked=revoked,
                actor=actor,
                subject=subject,
                application=application,
                client_ip=client_ip,
            )
    return revoked


def end(
    lineage: Lineage, *, subject: Any = None, application: Any = None, client_ip: str | None = None
) -> None:
    """``lineage`` was found ended on use: revoke everything that hangs off its ended
    authorizations (a refresh and a re-exchange are refused by the caller)."""
    inherited = (
        list(ActorAuthorization.objects.filter(lineage=lineage.inherited)) if lineage.inherited else []
    )
    authorizations = [lineage.authorization, *(_authorization(row) for row in inherited)]
    cascade(
        families=[a.token_family for a in authorizations if a.token_family is not None],
        access_tokens=[a.access_token_id for a in authorizations if a.access_token_id is not None],
        reason=AUTHORIZATION_ENDED,
        subject=subject,
        application=application,
        client_ip=client_ip,
    )


def _authorization(row: ActorAuthorization) -> Authorization:
    return Authorization(token_family=row.actor_token_family, access_token_id=row.actor_access_token_id)


# Issuing tokens with a lineage ------------------------------------------------------------------


def issue(descent: Descent, *, using: str) -> dict[str, Any] | None:
    """The lineage fields of the ``ExchangedToken`` rows an exchange is about to write, or None
    when the subject's lineage has ended (and what hangs off it is revoked: the caller refuses).

    A re-exchange keeps the subject's lineage. A nested impersonation records the new actor's
    authorization and, under a new ``lineage`` key, the subject's (its own actor's and the older
    ones): one more query to read those and one to write them, only then.
    """
    subject = descent.subject
    if subject is not None and not alive(subject, using=using):
        end(subject)
        return None
    if descent.actor is None:
        assert subject is not None
        return subject.fields()
    if subject is None:
        return {**descent.actor.fields(), "lineage": None}
    key = uuid.uuid4()
    older = [subject.authorization]
    if subject.inherited is not None:
        older += [
            _authorization(row)
            for row in ActorAuthorization.objects.using(using).filter(lineage=subject.inherited)
        ]
    ActorAuthorization.objects.using(using).bulk_create(
        ActorAuthorization(
            lineage=key, actor_token_family=a.token_family, actor_access_token_id=a.access_token_id
        )
        for a in dict.fromkeys(older)
    )
    return {**descent.actor.fields(), "lineage": key}


# Revocation and deactivation -----------------------------------------------------------------


def presented_authorizations(token: str, application: Any) -> tuple[list[Any], list[Any], Any]:
    """The families and access tokens an RFC 7009 request for ``token`` may end, and whose they
    are, read before DOT revokes it (DOT's lookup: the token's checksum among the client's)."""
    checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
    families: list[Any] = []
    access_tokens: list[Any] = []
    user = None
    lookup = {"token_checksum": checksum, "application": application}
    for access_token in (
        get_access_token_model().objects.select_related("user", *access_token_related()).filter(**lookup)
    ):
        families.append(of_access_token(access_token).token_family)
        access_tokens.append(access_token.pk)
        user = user or access_token.user
    for refresh_token in get_refresh_token_model().objects.select_related("user").filter(**lookup):
        families.append(refresh_token.token_family)
        access_tokens.append(refresh_token.access_token_id)
        user = user or refresh_token.user
    return _present(families), _present(access_tokens), user


def _present(values: Iterable[Any]) -> list[Any]:
    return [value for value in dict.fromkeys(values) if value is not None]


def actor_saved(
    sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    """``post_save`` of the user model: a deactivated actor ends every impersonation running on
    their authorizations, whether or not they are still alive otherwise."""
    if created or getattr(instance, "is_active", True):
        return
    if update_fields is not None and "is_active" not in update_fields:
        return
    cascade(
        families=get_refresh_token_model().objects.filter(user=instance).values("token_family"),
        access_tokens=get_access_token_model().objects.filter(user=instance).values("pk"),
        reason=ACTOR_DEACTIVATED,
        only_ended=False,
        actor=instance,
    )


def connect_receivers() -> None:
    """Connect this module's signal receivers (called from ``TokenExchangeConfig.ready``)."""
    post_save.connect(actor_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="token_exchange.lineage")
