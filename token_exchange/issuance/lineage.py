"""What each exchanged token descends from, and what ends with it.

A token lives only as long as the authorization it descends from. That authorization is not a
token, which a routine refresh replaces every hour, but what the refresh carries on: a **refresh-
token family** (DOT's ``RefreshToken.token_family``, shared by every rotation), found from an
access token's own refresh token or the refresh token it was refreshed from. An access token
without a refresh token is its own authorization (its row, by primary key). An ID token stands
for the authorization of the access token issued with it.

Every ``ExchangedToken`` an exchange writes records its **root**: the authorization of the login
it descends from (``actor_token_family`` or ``actor_access_token``; the column names are the
impersonation's, where the root is the actor's). For a token DOT issued at login that is its own
authorization; for a token an exchange issued, the root *that* token recorded, copied (never
re-derived from the new token's own family, which no revocation of the login would reach). An
impersonated token's root is its actor token's; a plain exchange's, its subject token's. The
other authorizations it depends on are ``ActorAuthorization`` rows under its ``lineage`` key,
written once and shared by every token of that exchange: the subject's, when an actor acts for a
subject token, the older actors' of a nested impersonation, and the own authorization of an
exchanged token it was made from (revoking that token ends what was exchanged from it, as
revoking the login does). A refresh copies all of it. Tokens of an admin-started impersonation
live by their ``ImpersonationSession`` instead (``impersonation_sessions``); any other exchanged
token with no root (issued before it was recorded) has no authorization left and is refused.

An authorization is **alive** while its family has a refresh token that is not revoked, still has
its access token and, with ``REFRESH_TOKEN_EXPIRE_SECONDS``, has not expired (what DOT's
``validate_refresh_token`` accepts); or, without a family, while its access token exists and has
not expired. The owner's own refresh keeps it alive (the family goes on); revoking the access or
refresh token (RFC 7009), RP-initiated logout with ``OIDC_RP_INITIATED_LOGOUT_DELETE_TOKENS``,
revoking the family (reuse detection) and expiry end it. Whether an actor may still act at all
(active, still an impersonator) is ``impersonation_decision``'s question, asked first.

What ends with it, and when:

* eagerly, in the transaction of the revocation, where DOT has a hook: the RFC 7009 endpoint
  (``TokenExchangeValidator.revoke_token``) and deactivating a user (``post_save`` of the user
  model, below) revoke everything descending from the authorization (:func:`cascade`) and write
  a ``tokens.revoked`` audit row (one for impersonated tokens, one for the others);
* lazily everywhere a token is used: its liveness is an annotation on the lookup that reads it
  (:func:`with_liveness`), so introspection, DOT's bearer-token check, the token readers (as
  ``subject_token`` or ``actor_token``) and a refresh refuse a token whose lineage ended, and
  revoke what hangs off the ended authorization (:func:`end`). Logout, reuse detection and
  expiry have no hook; they are found here.

A resource server that checks a JWT offline accepts it until its own ``exp``; everything that
asks this server's rows sees the end at once.
"""

from __future__ import annotations

import datetime
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import router, transaction
from django.db.models import (
    BooleanField,
    DateTimeField,
    Exists,
    Expression,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
    Value,
)
from django.db.models.signals import post_save
from django.utils import timezone
from oauth2_provider.models import (
    get_access_token_model,
    get_refresh_token_model,
    refresh_token_expire_timedelta,
)

from token_exchange.issuance import audit, revocation
from token_exchange.models import ActorAuthorization, ExchangedToken

# Reason codes (audit rows and logs): an impersonated token's, then a plain exchanged token's.
ACTOR_DEACTIVATED = "actor_deactivated"
USER_DEACTIVATED = "user_deactivated"
ACTOR_TOKEN_REVOKED = "actor_token_revoked"
TOKEN_REVOKED = "token_revoked"
ACTOR_AUTHORIZATION_ENDED = "actor_authorization_ended"
AUTHORIZATION_ENDED = "authorization_ended"
# A presented token whose authorization cannot be determined (an ID token issued alone).
AUTHORIZATION_UNKNOWN = "authorization_unknown"


def ended_reason(act: Any) -> str:
    """The reason code of a token found with its lineage ended: an impersonated one's, or not."""
    return ACTOR_AUTHORIZATION_ENDED if act is not None else AUTHORIZATION_ENDED


@dataclass(frozen=True)
class Authorization:
    """One authorization: a refresh-token family, or else one access token (its pk)."""

    token_family: uuid.UUID | None = None
    access_token_id: Any = None

    def fields(self) -> dict[str, Any]:
        return {"actor_token_family": self.token_family, "actor_access_token_id": self.access_token_id}


@dataclass(frozen=True)
class Lineage:
    """What an exchanged token descends from, as its ``ExchangedToken`` (``record_id``) says: its
    root, and the key of the other authorizations it depends on."""

    record_id: int
    authorization: Authorization
    inherited: uuid.UUID | None = None  # the ActorAuthorization rows

    def fields(self) -> dict[str, Any]:
        return {**self.authorization.fields(), "lineage": self.inherited}


@dataclass(frozen=True)
class Descent:
    """The lineage the tokens about to be issued will have: their ``root``, the further
    authorizations they depend on (``also``), and the ``ActorAuthorization`` keys whose rows
    they depend on too (``inherited``)."""

    # None: the issued tokens are their own root, as a login's are (a trusted issuer's token
    # was exchanged: nothing of this server's is older); minting fills it in.
    root: Authorization | None
    also: tuple[Authorization, ...] = ()
    inherited: tuple[uuid.UUID, ...] = ()


def _ancestry(token: Any) -> Descent | None:
    """What a verified presented token descends from, or None when that is unknown: a login
    token, its own authorization; an exchanged one, its recorded root and key, and its own
    authorization (so that revoking it ends what is exchanged from it)."""
    recorded: Lineage | None = getattr(token, "lineage", None)
    own: Authorization | None = getattr(token, "own_authorization", None)
    if recorded is not None:
        also = (own,) if own is not None and own != recorded.authorization else ()
        inherited = (recorded.inherited,) if recorded.inherited is not None else ()
        return Descent(root=recorded.authorization, also=also, inherited=inherited)
    authorization: Authorization | None = getattr(token, "authorization", None)
    return Descent(root=authorization) if authorization is not None else None


def descent(*, subject: Any, actor: Any = None) -> Descent | None:
    """The :class:`Descent` of an exchange of the verified ``subject`` (with ``actor``, the
    verified actor token of an impersonation).

    The root is the actor's when there is one, else the subject's; everything else either
    descends from goes into ``also`` and ``inherited``. None only for a subject issued under an
    admin-started impersonation, exchanged without an actor (its session rules the tokens).
    The grant refuses a presented token whose authorization is unknown before it gets here
    (``known``); this fails closed all the same.
    """
    if getattr(subject, "federated", None) is not None and actor is None:
        return Descent(root=None)
    of_subject = _ancestry(subject)
    if actor is None:
        if of_subject is None and getattr(subject, "impersonation_id", None) is not None:
            return None
        if of_subject is None:
            raise ValueError("An exchanged token needs the authorization of its subject token.")
        return of_subject
    of_actor = _ancestry(actor)
    if of_actor is None:
        raise ValueError("An impersonated token needs the authorization of its actor token.")
    if of_subject is None:
        return of_actor
    return Descent(
        root=of_actor.root,
        also=(*of_actor.also, *filter(None, [of_subject.root]), *of_subject.also),
        inherited=(*of_actor.inherited, *of_subject.inherited),
    )


def known(token: Any) -> bool:
    """Does this presented token (an access or ID token; not a named user) name the
    authorization it descends from? One issued under an admin-started impersonation needs none."""
    return _ancestry(token) is not None or getattr(token, "impersonation_id", None) is not None


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
    """What to ``select_related`` with an access token so that :func:`own_authorization` and
    :func:`access_token_alive` run no query (:func:`of_access_token` needs ``exchanged`` too)."""
    relation = refresh_token_relation()
    return [relation[0]] if relation else []


def _refresh_token(access_token: Any) -> Any:
    relation = refresh_token_relation()
    if relation is not None:
        return getattr(access_token, relation[1], None)
    return get_refresh_token_model().objects.filter(access_token=access_token).first()


def own_authorization(access_token: Any) -> Authorization:
    """The authorization an access token itself belongs to: the family of its refresh token, or
    else the token itself. What revoking it (RFC 7009) ends.

    Its own refresh token is enough: DOT gives every access token a refresh grant issues one
    (rotated, or the old one moved onto it), and revoking a refresh token deletes its access
    token. (Joining the refresh token it was refreshed from too cost PostgreSQL 0.2 ms of
    planning on every exchange.)"""
    family = getattr(_refresh_token(access_token), "token_family", None)
    if family is not None:
        return Authorization(token_family=family)
    return Authorization(access_token_id=access_token.pk)


def of_access_token(access_token: Any) -> Authorization:
    """The root an access token descends from: the one recorded for an exchanged token (empty
    when none was: such a token has no authorization left), else its own."""
    recorded = of(getattr(access_token, "exchanged", None))
    return recorded.authorization if recorded is not None else own_authorization(access_token)


def _refresh_token_live(refresh_token: Any) -> bool:
    """DOT's ``validate_refresh_token`` on a refresh token row: not revoked, not an orphan, and
    within ``REFRESH_TOKEN_EXPIRE_SECONDS`` of its access token's expiry."""
    if refresh_token is None or refresh_token.revoked is not None or refresh_token.access_token_id is None:
        return False
    delta = refresh_token_expire_timedelta()
    return not delta or refresh_token.access_token.expires + delta > timezone.now()


def access_token_alive(access_token: Any) -> bool:
    """Is the own authorization of an access token row that still exists alive? While it has not
    expired, or while its refresh token can still renew it. (Revoking either deletes the access
    token: a row that is gone is an authorization that ended.)"""
    return not access_token.is_expired() or _refresh_token_live(_refresh_token(access_token))


def of(record: ExchangedToken | None) -> Lineage | None:
    """The lineage a stored exchanged token carries, or None: not exchanged, or issued under an
    admin-started impersonation without an authorization of its own (its session rules it).

    A record with no root at all (issued before roots were recorded) gets an empty one, which
    is never alive: it fails closed."""
    if record is None:
        return None
    authorization = Authorization(
        token_family=record.actor_token_family, access_token_id=record.actor_access_token_id
    )
    if record.impersonation_id is not None and authorization == Authorization():
        return None
    return Lineage(record_id=record.pk, authorization=authorization, inherited=record.lineage)


# Rows revoked per statement by a cascade.
_BATCH = 500

# Is a lineage alive? --------------------------------------------------------------------------

# Before any token's expiry: the cut-off when refresh tokens never expire.
_NEVER = datetime.datetime(1, 1, 2, tzinfo=datetime.timezone.utc)


def _refresh_cutoff(now: datetime.datetime) -> datetime.datetime:
    """A family lives while a refresh token's access token expired after this."""
    delta = refresh_token_expire_timedelta()
    if not delta:
        return _NEVER
    try:
        cutoff: datetime.datetime = now - delta
    except OverflowError:  # "never expires" written as a huge number of seconds
        return _NEVER
    return cutoff


@dataclass(frozen=True)
class _Clock:
    """The two moments the liveness test compares with, as SQL expressions."""

    now: Expression
    refresh_cutoff: Expression


def _fixed_clock() -> _Clock:
    now = timezone.now()
    return _Clock(
        now=Value(now, output_field=DateTimeField()),
        refresh_cutoff=Value(_refresh_cutoff(now), output_field=DateTimeField()),
    )


def _authorization_alive(clock: _Clock, prefix: str = "") -> Q:
    """Q on a row with ``actor_token_family`` and ``actor_access_token`` columns (an
    ``ExchangedToken`` or an ``ActorAuthorization``, reached by ``prefix``): its authorization
    is alive."""
    live_refresh_tokens = get_refresh_token_model().objects.filter(
        token_family=OuterRef(f"{prefix}actor_token_family"),
        revoked__isnull=True,
        access_token__isnull=False,
        access_token__expires__gt=clock.refresh_cutoff,
    )
    live_access_token = get_access_token_model().objects.filter(
        pk=OuterRef(f"{prefix}actor_access_token"), expires__gt=clock.now
    )
    return Q(Q(**{f"{prefix}actor_token_family__isnull": False}), Exists(live_refresh_tokens)) | Q(
        Q(**{f"{prefix}actor_token_family__isnull": True}), Exists(live_access_token)
    )


def alive_q(prefix: str = "", clock: _Clock | None = None) -> Q:
    """Q on ``ExchangedToken`` (or on a model reaching it by ``prefix``, e.g. ``"exchanged__"``):
    the token's root and every authorization under its ``lineage`` key are alive.

    A row without a root (an exchanged token from before roots were recorded) is not."""
    clock = clock or _fixed_clock()
    ended = ActorAuthorization.objects.filter(lineage=OuterRef(f"{prefix}lineage")).exclude(
        _authorization_alive(clock)
    )
    return Q(_authorization_alive(clock, prefix), ~Exists(ended))


def with_liveness(queryset: QuerySet[Any], prefix: str = "", clock: _Clock | None = None) -> QuerySet[Any]:
    """``queryset`` with ``lineage_alive`` on each row (about the ``ExchangedToken`` it reaches by
    ``prefix``), so :func:`alive` runs no query."""
    annotated: QuerySet[Any] = queryset.annotate(
        lineage_alive=ExpressionWrapper(alive_q(prefix, clock), output_field=BooleanField())
    )
    return annotated


def alive(lineage: Lineage, record: Any = None, *, using: str | None = None) -> bool:
    """Is ``lineage`` alive? Free when ``record`` (the ``ExchangedToken``, or the token row that
    reaches it) was read :func:`with_liveness`; one query otherwise. A record that is gone
    meanwhile is not alive."""
    annotated = getattr(record, "lineage_alive", None) if record is not None else None
    if annotated is not None:
        return bool(annotated)
    records = ExchangedToken.objects.using(using or router.db_for_write(ExchangedToken))
    return records.filter(pk=lineage.record_id).filter(alive_q()).exists()


# What ends with an authorization -------------------------------------------------------------


def _descends_from(families: Any, access_tokens: Any) -> Q:
    """Q on ``ExchangedToken``: descends from one of these families or access tokens (values or
    subqueries), as its root or under its ``lineage`` key."""
    named = Q(actor_token_family__in=families) | Q(actor_access_token__in=access_tokens)
    return named | Q(lineage__in=ActorAuthorization.objects.filter(named).values("lineage"))


def cascade(
    *,
    families: Any = (),
    access_tokens: Any = (),
    records: Iterable[int] = (),
    reasons: tuple[str, str],
    only_ended: bool = True,
    user: Any = None,
    subject: Any = None,
    application: Any = None,
    client_ip: str | None = None,
) -> dict[str, int]:
    """Revoke every token descending from these authorizations, and the ``records`` named (with
    ``only_ended``, those whose lineage has ended: an authorization named here that is still
    alive keeps its tokens). One ``tokens.revoked`` row for the impersonated tokens (reason
    ``reasons[0]``, ``user`` as the actor) and one for the others (``reasons[1]``, ``user`` as
    the subject) when anything was revoked. One transaction, joined if the caller has one (the
    revocation's own)."""
    using = router.db_for_write(get_access_token_model())
    revoked_total: dict[str, int] = {}
    with transaction.atomic(using=using):
        found = ExchangedToken.objects.using(using).filter(
            _descends_from(families, access_tokens) | Q(pk__in=list(records))
        )
        if only_ended:
            found = found.exclude(alive_q())
        # A refresh token already revoked (rotated away) has nothing left to revoke.
        found = found.exclude(refresh_token__revoked__isnull=False)
        impersonated: dict[Any, list[int]] = {}
        plain: list[int] = []
        for pk, act in found.values_list("pk", "act").iterator():
            if act is None:
                plain.append(pk)
            else:
                # By the actor acting now (the outermost act, RFC 8693 §4.1): their row names them.
                impersonated.setdefault(act.get("sub") if isinstance(act, dict) else None, []).append(pk)
        groups: list[tuple[list[int], str, Any, Any, dict[str, Any]]] = []
        User = get_user_model()
        for sub, pks in impersonated.items():
            actor = User._default_manager.filter(pk=sub).first() if sub is not None else None
            ended_by = {} if user is None or user == actor else {"ended_by": {"user_id": str(user.pk)}}
            groups.append((pks, reasons[0], actor, subject, ended_by))
        groups.append((plain, reasons[1], None, subject or user, {}))
        for pks, reason, actor, owner, extra in groups:
            revoked: dict[str, int] = {}
            # In batches: a busy login may have thousands of descendants, and a query may carry
            # only so many parameters (SQLite's default limit is 32,766).
            for start in range(0, len(pks), _BATCH):
                for kind, count in revocation.revoke_issued(pk__in=pks[start : start + _BATCH]).items():
                    revoked[kind] = revoked.get(kind, 0) + count
            if any(revoked.values()):
                audit.tokens_revoked(
                    reason=reason,
                    revoked=revoked,
                    actor=actor,
                    subject=owner,
                    application=application,
                    client_ip=client_ip,
                    **extra,
                )
            for kind, count in revoked.items():
                revoked_total[kind] = revoked_total.get(kind, 0) + count
    return revoked_total


def end(
    lineage: Lineage, *, subject: Any = None, application: Any = None, client_ip: str | None = None
) -> None:
    """``lineage`` was found ended on use: revoke everything that hangs off its ended
    authorizations, and the token itself (the caller refuses it)."""
    inherited = (
        list(ActorAuthorization.objects.filter(lineage=lineage.inherited)) if lineage.inherited else []
    )
    authorizations = [lineage.authorization, *(_authorization(row) for row in inherited)]
    cascade(
        families=[a.token_family for a in authorizations if a.token_family is not None],
        access_tokens=[a.access_token_id for a in authorizations if a.access_token_id is not None],
        records=[lineage.record_id],
        reasons=(ACTOR_AUTHORIZATION_ENDED, AUTHORIZATION_ENDED),
        subject=subject,
        application=application,
        client_ip=client_ip,
    )


def refuse_if_ended(record: Any, *, subject: Any = None, application: Any = None) -> str | None:
    """For a token row read :func:`with_liveness` (an ``ExchangedToken``, or a token reaching it
    as ``exchanged``): None while its lineage lives; when it has ended, the reason code, after
    revoking what hangs off it (in a transaction: a reader may run outside the token request's)."""
    exchanged = record if isinstance(record, ExchangedToken) else getattr(record, "exchanged", None)
    ended = of(exchanged)
    if ended is None or alive(ended, record):
        return None
    assert exchanged is not None
    with transaction.atomic(using=router.db_for_write(get_access_token_model())):
        end(ended, subject=subject, application=application)
    return ended_reason(exchanged.act)


def _authorization(row: ActorAuthorization) -> Authorization:
    return Authorization(token_family=row.actor_token_family, access_token_id=row.actor_access_token_id)


# Issuing tokens with a lineage ------------------------------------------------------------------


def issue(descent: Descent, *, using: str) -> dict[str, Any]:
    """The lineage fields of the ``ExchangedToken`` rows an exchange is about to write.

    The presented tokens were found alive when they were read. A plain exchange of a login
    token records its root and nothing else (no query). Otherwise the further authorizations go
    under a new ``lineage`` key, written once (one query, and one more to copy the rows of the
    presented tokens' own keys); a single inherited key with nothing to add is shared as it is.
    """
    if descent.root is None:
        return {"lineage": None}  # minting names the tokens' own authorization
    if not descent.also and len(descent.inherited) <= 1:
        return {**descent.root.fields(), "lineage": descent.inherited[0] if descent.inherited else None}
    others = list(descent.also)
    if descent.inherited:
        others += [
            _authorization(row)
            for row in ActorAuthorization.objects.using(using).filter(lineage__in=descent.inherited)
        ]
    rows = [a for a in dict.fromkeys(others) if a != descent.root]
    if not rows:
        return {**descent.root.fields(), "lineage": None}
    key = uuid.uuid4()
    ActorAuthorization.objects.using(using).bulk_create(
        ActorAuthorization(
            lineage=key, actor_token_family=a.token_family, actor_access_token_id=a.access_token_id
        )
        for a in rows
    )
    return {**descent.root.fields(), "lineage": key}


# Revocation and deactivation -----------------------------------------------------------------


def presented_authorizations(token: str, application: Any) -> tuple[list[Any], list[Any], Any]:
    """The families and access tokens an RFC 7009 request for ``token`` may end (the token's own
    authorization, not the root it descends from), and whose they are, read before DOT revokes
    it (DOT's lookup: the token's checksum among the client's)."""
    checksum = hashlib.sha256(token.encode("utf-8")).hexdigest()
    families: list[Any] = []
    access_tokens: list[Any] = []
    user = None
    lookup = {"token_checksum": checksum, "application": application}
    related = access_token_related()
    for access_token in get_access_token_model().objects.select_related("user", *related).filter(**lookup):
        families.append(own_authorization(access_token).token_family)
        access_tokens.append(access_token.pk)
        user = user or access_token.user
    for refresh_token in get_refresh_token_model().objects.select_related("user").filter(**lookup):
        families.append(refresh_token.token_family)
        access_tokens.append(refresh_token.access_token_id)
        user = user or refresh_token.user
    return _present(families), _present(access_tokens), user


def _present(values: Iterable[Any]) -> list[Any]:
    return [value for value in dict.fromkeys(values) if value is not None]


def user_saved(
    sender: Any, instance: Any, created: bool = False, update_fields: Any = None, **kwargs: Any
) -> None:
    """``post_save`` of the user model: a deactivated user ends everything descending from their
    authorizations at once, whether or not they are still alive otherwise: the impersonations
    they act in (``actor_deactivated``) and the tokens exchanged from their logins
    (``user_deactivated``)."""
    if created or getattr(instance, "is_active", True):
        return
    if update_fields is not None and "is_active" not in update_fields:
        return
    cascade(
        families=get_refresh_token_model().objects.filter(user=instance).values("token_family"),
        access_tokens=get_access_token_model().objects.filter(user=instance).values("pk"),
        reasons=(ACTOR_DEACTIVATED, USER_DEACTIVATED),
        only_ended=False,
        user=instance,
    )


def connect_receivers() -> None:
    """Connect this module's signal receivers (called from ``TokenExchangeConfig.ready``)."""
    post_save.connect(
        user_saved, sender=settings.AUTH_USER_MODEL, dispatch_uid="token_exchange.issuance.lineage"
    )
