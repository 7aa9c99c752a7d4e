"""Audit rows for every change to impersonator grants, client keys, client policies (their trusted
issuers included), trusted issuers, linked identities, the security-relevant fields of
applications, and the user flags and groups that decide who may impersonate whom
(``is_active``, ``is_staff``, ``is_superuser``, auth group membership).

Model signals, not the admin, write them, so that a change from the shell, a management command
or a site's own code is audited too:

- ``pre_save`` reads the row as it is in the database (one query), ``post_save`` compares it
  with what was saved and writes one ``*.changed`` row through ``audit.changed`` when an audited
  field changed (``created`` always writes one). A save that changes nothing writes nothing.
- ``pre_delete`` writes the ``deleted`` row. Django sends it inside the deletion's own
  transaction, before it sets the audit rows' foreign keys to the deleted objects to ``NULL``,
  so a cascade (deleting an application deletes its keys and policy; deleting a user, their
  grants) can name the dying rows without breaking a foreign key; their ids stay in the payload.

The row is written in the transaction of the change wherever there is one: the admin's views run
in one, and so does every deletion. A bare ``save()`` in autocommit mode commits the change and
then its audit row; wrap such code in ``transaction.atomic()`` to have both or neither.
``QuerySet.update()``, ``bulk_create``/``bulk_update``, raw SQL and ``loaddata`` (``raw`` saves)
send no signals and are not audited.

Who made the change: the admin sets it for the duration of a view with ``acting(request)`` (a
context variable, reset when the view returns, so it never leaks into the next request a thread
serves). A context variable rather than an argument, because the change that needs it is made
several calls away, by Django (an inline formset, a cascade, a bulk delete action). Outside such
a view the actor is ``None``.

Payloads never hold a secret: an application's client secret is reported only as ``changed``
(or, on creation and deletion, as ``set`` or empty), and a client key by its RFC 7638
thumbprint, never its PEM.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from django.contrib.auth import get_user_model
from django.db.models import Model
from django.db.models.signals import m2m_changed, post_save, pre_delete, pre_save
from jwcrypto import jwk
from oauth2_provider.models import get_application_model

from token_exchange.issuance import audit
from token_exchange.models import (
    AuditEvent,
    ClientKey,
    ClientPolicy,
    FederatedIdentity,
    ImpersonatorGrant,
    TrustedIssuer,
)

EventType = AuditEvent.EventType

SECRET_SET = "set"
SECRET_CHANGED = "changed"

# DOT 3.4.1's AbstractApplication, field by field: what decides who may obtain tokens, where they
# go and how they are signed. Not audited: name (shown to users, not trusted), created/updated,
# registration_source (read-only in DOT's admin, set at registration) and cimd_expires_at (the
# CIMD resolver's cache). Fields a swapped model lacks are skipped.
APPLICATION_FIELDS = (
    "client_id",
    "client_type",
    "client_secret",
    "hash_client_secret",
    "authorization_grant_type",
    "redirect_uris",
    "post_logout_redirect_uris",
    "allowed_origins",
    "algorithm",
    "skip_authorization",
    "user",
)


@dataclass(frozen=True)
class Acting:
    user: Any
    client_ip: str | None


_acting: contextvars.ContextVar[Acting | None] = contextvars.ContextVar("token_exchange_acting", default=None)


@contextlib.contextmanager
def acting(user: Any, *, client_ip: str | None = None) -> Iterator[None]:
    """Changes made inside this block are audited as made by ``user`` from ``client_ip``."""
    token = _acting.set(Acting(user=user, client_ip=client_ip))
    try:
        yield
    finally:
        _acting.reset(token)


def current() -> Acting | None:
    return _acting.get()


# --- What each model's row says ------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date):
        return value.isoformat()
    return value


def _id(value: Any) -> str | None:
    return None if value is None else str(value)


def key_thumbprint(pem: str) -> str | None:
    """The RFC 7638 SHA-256 thumbprint of a PEM public key (its ``kid`` when
    ``createclientkey`` made it), or ``None`` if it is not one. A private key gets none: the
    payload must not even hint that one was pasted."""
    data = (pem or "").strip().encode("ascii", "replace")
    if not data or b"PRIVATE KEY" in data:
        return None
    try:
        key = serialization.load_pem_public_key(data)
        return str(jwk.JWK.from_pyca(key).thumbprint())
    except (ValueError, TypeError, UnsupportedAlgorithm, jwk.InvalidJWKValue):
        return None


def _client_key(key: ClientKey) -> dict[str, Any]:
    return {
        "application_id": _id(key.application_id),
        "kid": key.kid,
        "algorithm": key.algorithm,
        "active": key.active,
        "expires_at": _plain(key.expires_at),
        "thumbprint": key_thumbprint(key.public_key),
    }


def _client_policy(policy: ClientPolicy) -> dict[str, Any]:
    values = {
        field.attname: _plain(getattr(policy, field.attname))
        for field in ClientPolicy._meta.concrete_fields
        if not field.primary_key
    }
    values["application_id"] = _id(values["application_id"])
    return values


def _trusted_issuer(row: TrustedIssuer) -> dict[str, Any]:
    return {
        field.attname: _plain(getattr(row, field.attname))
        for field in TrustedIssuer._meta.concrete_fields
        if not field.primary_key and field.name not in ("created_at", "updated_at")
    }


def _federated_identity(row: FederatedIdentity) -> dict[str, Any]:
    return {"issuer_id": _id(row.issuer_id), "subject": row.subject, "user_id": _id(row.user_id)}


def _grant(row: ImpersonatorGrant) -> dict[str, Any]:
    return {
        "user_id": _id(row.user_id),
        "role": row.role,
        "organization_id": _id(row.organization_id),
        "granted_by_id": _id(row.granted_by_id),
    }


def _application_fields(model: type[Model]) -> list[Any]:
    fields = []
    for name in APPLICATION_FIELDS:
        with contextlib.suppress(Exception):
            fields.append(model._meta.get_field(name))
    return fields


def _application(application: Any) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in _application_fields(type(application)):
        value = getattr(application, field.attname)
        if field.name == "client_secret":
            # Compared by its stored form (a hash, or the secret itself when not hashed); only
            # ever reported as set, empty or changed.
            values["client_secret"] = value
        elif field.is_relation:
            values[field.attname] = _id(value)
        else:
            values[field.attname] = _plain(value)
    return values


# What decides who may impersonate whom besides the grants (token_exchange.impersonation.facts): an
# inactive user is nobody; staff and superusers are "admin subjects" an end-user impersonator
# cannot act as; only a superuser may act as a superuser. Group membership is the default
# organization (USER_ORGANIZATIONS); a site with another organization model audits its own.
USER_FIELDS = ("is_active", "is_staff", "is_superuser")


def _user(user: Any) -> dict[str, Any]:
    return {name: getattr(user, name) for name in USER_FIELDS if hasattr(user, name)}


@dataclass(frozen=True)
class Audited:
    event_type: str
    describe: Callable[[Any], dict[str, Any]]
    target: Callable[[Any], dict[str, Any]]
    application: Callable[[Any], Any] = lambda instance: None
    subject: Callable[[Any], Any] = lambda instance: None
    # Whether a created or deleted row is worth a row at all (every change always is).
    notable: Callable[[dict[str, Any]], bool] = lambda values: True


def _audited() -> dict[type[Model], Audited]:
    Application = get_application_model()
    return {
        ImpersonatorGrant: Audited(
            EventType.IMPERSONATOR_GRANT_CHANGED,
            _grant,
            lambda row: {"id": row.pk, "user_id": _id(row.user_id)},
            subject=lambda row: row.user,
        ),
        ClientKey: Audited(
            EventType.CLIENT_KEY_CHANGED,
            _client_key,
            lambda key: {"id": key.pk, "client_id": key.application.client_id, "kid": key.kid},
            application=lambda key: key.application,
        ),
        ClientPolicy: Audited(
            EventType.CLIENT_POLICY_CHANGED,
            _client_policy,
            lambda policy: {"id": policy.pk, "client_id": policy.application.client_id},
            application=lambda policy: policy.application,
        ),
        TrustedIssuer: Audited(
            EventType.TRUSTED_ISSUER_CHANGED,
            _trusted_issuer,
            lambda row: {"id": row.pk, "issuer": row.issuer},
        ),
        FederatedIdentity: Audited(
            EventType.FEDERATED_IDENTITY_CHANGED,
            _federated_identity,
            lambda row: {"id": row.pk, "issuer": row.issuer.issuer, "subject": row.subject},
            subject=lambda row: row.user,
        ),
        Application: Audited(
            EventType.APPLICATION_CHANGED,
            _application,
            lambda application: {"id": application.pk, "client_id": application.client_id},
            application=lambda application: application,
        ),
        get_user_model(): Audited(
            EventType.USER_CHANGED,
            _user,
            lambda user: {"id": _id(user.pk), "username": user.get_username()},
            subject=lambda user: user if user.pk is not None else None,
            # A sign-up or a deleted customer is no change of powers; a new or deleted admin is.
            notable=lambda values: bool(values.get("is_staff") or values.get("is_superuser")),
        ),
    }


# --- Receivers -----------------------------------------------------------------------------------

_BEFORE = "_token_exchange_audit_before"


def _secret(values: dict[str, Any] | None, marker: str) -> dict[str, Any] | None:
    """``values`` with the client secret (if it is among them) replaced by ``marker``, or by
    ``""`` when there was none: its value and its hash never reach the audit trail."""
    if values is None or "client_secret" not in values:
        return values
    return {**values, "client_secret": marker if values["client_secret"] else ""}


def _write(spec: Audited, instance: Any, *, action: str, before: Any, after: Any) -> None:
    if spec.event_type == EventType.APPLICATION_CHANGED:
        before = _secret(before, SECRET_SET)
        after = _secret(after, SECRET_SET if action == "created" else SECRET_CHANGED)
    who = current()
    audit.changed(
        spec.event_type,
        user=who.user if who is not None else None,
        action=action,
        target=spec.target(instance),
        before=before,
        after=after,
        client_ip=who.client_ip if who is not None else None,
        application=spec.application(instance),
        subject=spec.subject(instance),
    )


def _untouched(spec: Audited, update_fields: Any) -> bool:
    """A save limited to fields none of which is audited (a login's ``last_login``)."""
    if update_fields is None or spec.event_type != EventType.USER_CHANGED:
        return False
    return not set(update_fields) & set(USER_FIELDS)


def _remember(
    sender: type[Model],
    instance: Any,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **_: Any,
) -> None:
    spec = _SPECS[sender]
    if raw or _untouched(spec, update_fields):
        instance.__dict__.pop(_BEFORE, None)
        return
    old = None
    if instance.pk is not None and not instance._state.adding:
        old = sender._default_manager.using(using).filter(pk=instance.pk).first()
    setattr(instance, _BEFORE, spec.describe(old) if old is not None else None)


def _saved(
    sender: type[Model], instance: Any, created: bool, raw: bool = False, update_fields: Any = None, **_: Any
) -> None:
    spec = _SPECS[sender]
    if raw or _untouched(spec, update_fields):
        return
    before = instance.__dict__.pop(_BEFORE, None)
    after = spec.describe(instance)
    if created or before is None:
        if spec.notable(after):
            _write(spec, instance, action="created", before=None, after=after)
        return
    changed = sorted(name for name in after if before.get(name) != after[name])
    if changed:
        _write(
            spec,
            instance,
            action="changed",
            before={name: before.get(name) for name in changed},
            after={name: after[name] for name in changed},
        )


def _deleting(sender: type[Model], instance: Any, **_: Any) -> None:
    spec = _SPECS[sender]
    before = spec.describe(instance)
    if spec.notable(before):
        _write(spec, instance, action="deleted", before=before, after=None)


@dataclass(frozen=True)
class AuditedRelation:
    """A many-to-many field whose changes are audited as changes of its owner's rows."""

    owner: Callable[[], type[Model]]  # the model that declares the field (the user model, ...)
    field: str  # its name, and the payload's key
    values: Callable[[Any], list[str]]  # what the payload shows of an owner's related rows

    @property
    def key(self) -> str:
        return f"_token_exchange_audit_{self.field}"

    def changing(
        self, sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any = None, **_: Any
    ) -> None:
        """``m2m_changed`` of the field's table: before the change, remember each affected
        owner's values; after it, write one ``*.changed`` row per owner whose values changed.

        From the owner's side (``user.groups.add``, the owner's admin form) that is one owner;
        from the other side (``group.user_set.add``, ``clear``) every owner it names.
        """
        if not action.startswith(("pre_", "post_")):
            return
        model = self.owner()
        if not reverse:
            owners = [instance]
        elif action.endswith("_clear"):
            owners = (
                list(model._default_manager.filter(**{self.field: instance})) if action == "pre_clear" else []
            )
            owners = owners or instance.__dict__.get(self.key + "_owners", [])
            instance.__dict__[self.key + "_owners"] = owners
        else:
            owners = list(model._default_manager.filter(pk__in=pk_set or ()))
        remembered: dict[Any, list[str]] = instance.__dict__.setdefault(self.key, {})
        for owner in owners:
            if action.startswith("pre_"):
                remembered[owner.pk] = self.values(owner)
                continue
            before = remembered.pop(owner.pk, None)
            after = self.values(owner)
            if before is not None and before != after:
                _write(
                    _SPECS[model],
                    owner,
                    action="changed",
                    before={self.field: before},
                    after={self.field: after},
                )
        if action.startswith("post_"):
            instance.__dict__.pop(self.key + "_owners", None)


# Group membership decides who may impersonate whom (the default organization); a client policy's
# trusted issuers decide whose tokens the client may present.
_RELATIONS = (
    AuditedRelation(
        get_user_model,
        "groups",
        lambda user: sorted(str(pk) for pk in user.groups.values_list("pk", flat=True)),
    ),
    AuditedRelation(
        lambda: ClientPolicy,
        "trusted_issuers",
        lambda policy: sorted(policy.trusted_issuers.values_list("issuer", flat=True)),
    ),
)


_SPECS: dict[type[Model], Audited] = {}


def connect_receivers() -> None:
    """Connect this module's signal receivers (called from ``TokenExchangeConfig.ready``)."""
    _SPECS.update(_audited())
    for model in _SPECS:
        uid = f"token_exchange.issuance.change_audit.{model._meta.label_lower}"
        pre_save.connect(_remember, sender=model, dispatch_uid=f"{uid}.pre_save")
        post_save.connect(_saved, sender=model, dispatch_uid=f"{uid}.post_save")
        pre_delete.connect(_deleting, sender=model, dispatch_uid=f"{uid}.pre_delete")
    for relation in _RELATIONS:
        field: Any = relation.owner()._meta.get_field(relation.field)
        through = field.remote_field.through
        m2m_changed.connect(
            relation.changing,
            sender=through,
            dispatch_uid=f"token_exchange.issuance.change_audit.{relation.field}",
        )
