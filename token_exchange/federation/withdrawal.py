"""Taking trust away revokes what it let in, at once.

Every token issued for a trusted issuer's token is its own authorization (``lineage``), and its
``ExchangedToken`` names the ``FederatedIdentity`` it was issued under. So when an admin (or the
site's code: these are model signals, not admin hooks)

* deletes a linked identity (or its issuer, which deletes its links), or changes its issuer,
  subject or user,
* disables a trusted issuer, or changes its ``issuer`` or its ``jwks_uri``,
* takes a trusted issuer off a client's policy, or deletes the policy (that client's tokens),
* makes a user linked automatically staff or a superuser (what those links issued),

those tokens are revoked, and with them everything exchanged from them, in the transaction of
the change, with one ``tokens.revoked`` audit row (reason ``trust_withdrawn``). A token a
resource server checks offline as a JWT lives until its ``exp``; anything that asks this server
sees the end at once.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import Q
from django.db.models.signals import m2m_changed, post_save, pre_delete, pre_save

from token_exchange.conf import token_exchange_settings
from token_exchange.issuance import lineage
from token_exchange.models import ClientPolicy, ExchangedToken, FederatedIdentity, TrustedIssuer

TRUST_WITHDRAWN = "trust_withdrawn"
_LINK_BEFORE = "_token_exchange_link_before"
_ISSUER_BEFORE = "_token_exchange_issuer_before"


def revoke(records: Q, *, subject: Any = None) -> None:
    """Revoke the tokens of these ``ExchangedToken`` rows and everything descending from them."""
    found = list(
        ExchangedToken.objects.filter(records).values_list("pk", "actor_token_family", "actor_access_token")
    )
    if not found:
        return
    lineage.cascade(
        families=sorted({family for _pk, family, _at in found if family is not None}),
        access_tokens=sorted({at for _pk, _family, at in found if at is not None}),
        records=[pk for pk, _family, _at in found],
        reasons=(TRUST_WITHDRAWN, TRUST_WITHDRAWN),
        only_ended=False,
        subject=subject,
    )


def _link_deleting(sender: Any, instance: FederatedIdentity, **_: Any) -> None:
    revoke(Q(federated_identity=instance), subject=instance.user)


def _link_saving(sender: Any, instance: FederatedIdentity, raw: bool = False, **_: Any) -> None:
    if raw or instance.pk is None:
        return
    before = (
        FederatedIdentity.objects.filter(pk=instance.pk)
        .values_list("issuer_id", "subject", "user_id")
        .first()
    )
    instance.__dict__[_LINK_BEFORE] = before


def _link_saved(sender: Any, instance: FederatedIdentity, created: bool, raw: bool = False, **_: Any) -> None:
    before = instance.__dict__.pop(_LINK_BEFORE, None)
    now = (instance.issuer_id, instance.subject, instance.user_id)
    if not raw and not created and before is not None and tuple(before) != now:
        # Another issuer, subject or user: every token of the link so far was issued for what
        # it said before.
        revoke(Q(federated_identity=instance))


# Which provider a trusted issuer is: its iss and where its keys come from. Changing either makes
# its links (and the tokens issued under them) about somebody else. Editing a pasted key set (a
# rotation) does not.
_IDENTITY_FIELDS = ("issuer", "jwks_uri")


def _issuer_saving(sender: Any, instance: TrustedIssuer, raw: bool = False, **_: Any) -> None:
    if raw or instance.pk is None:
        return
    instance.__dict__[_ISSUER_BEFORE] = (
        TrustedIssuer.objects.filter(pk=instance.pk).values(*_IDENTITY_FIELDS).first()
    )


def _issuer_saved(sender: Any, instance: TrustedIssuer, raw: bool = False, **_: Any) -> None:
    before = instance.__dict__.pop(_ISSUER_BEFORE, None)
    if raw:
        return
    changed = before is not None and any(before[name] != getattr(instance, name) for name in _IDENTITY_FIELDS)
    if not instance.enabled or changed:
        revoke(Q(federated_identity__issuer=instance))


def _user_saved(sender: Any, instance: Any, raw: bool = False, update_fields: Any = None, **_: Any) -> None:
    """A user who became staff or a superuser: what automatic links issued for them ends (only a
    link an admin made reaches an admin subject, ``identities``; a refresh would not ask)."""
    if raw or (update_fields is not None and not set(update_fields) & {"is_staff", "is_superuser"}):
        return  # a login's last_login, and the like
    if token_exchange_settings.IS_ADMIN_SUBJECT(instance):
        revoke(
            Q(federated_identity__user=instance)
            & Q(federated_identity__linked_by=FederatedIdentity.LinkedBy.AUTOMATIC),
            subject=instance,
        )


def _policy_deleting(sender: Any, instance: ClientPolicy, **_: Any) -> None:
    """A client policy deleted (its trusted issuers go with it, without ``m2m_changed``)."""
    revoke(Q(federated_identity__isnull=False) & _of_clients([instance.application_id]))


def _policy_issuers_changed(
    sender: Any, instance: Any, action: str, reverse: bool, pk_set: Any = None, **_: Any
) -> None:
    """A trusted issuer taken off a client's policy: that client's tokens of it."""
    if action not in ("pre_remove", "pre_clear"):
        return
    if not reverse:  # from the policy's side: instance is the ClientPolicy
        issuers = Q(federated_identity__issuer__in=pk_set) if action == "pre_remove" else Q()
        clients = [instance.application_id]
        revoke(Q(federated_identity__isnull=False) & issuers & _of_clients(clients))
        return
    # From the issuer's side: instance is the TrustedIssuer
    policies = ClientPolicy.objects.filter(trusted_issuers=instance)
    if action == "pre_remove":
        policies = policies.filter(pk__in=pk_set)
    clients = list(policies.values_list("application_id", flat=True))
    if clients:
        revoke(Q(federated_identity__issuer=instance) & _of_clients(clients))


def _of_clients(clients: list[Any]) -> Q:
    return (
        Q(access_token__application__in=clients)
        | Q(refresh_token__application__in=clients)
        | Q(id_token__application__in=clients)
    )


def connect_receivers() -> None:
    """Connect the receivers (called from ``TokenExchangeConfig.ready``)."""
    uid = "token_exchange.federation.withdrawal"
    pre_delete.connect(_link_deleting, sender=FederatedIdentity, dispatch_uid=f"{uid}.link_deleting")
    pre_save.connect(_link_saving, sender=FederatedIdentity, dispatch_uid=f"{uid}.link_saving")
    post_save.connect(_link_saved, sender=FederatedIdentity, dispatch_uid=f"{uid}.link_saved")
    pre_save.connect(_issuer_saving, sender=TrustedIssuer, dispatch_uid=f"{uid}.issuer_saving")
    post_save.connect(_issuer_saved, sender=TrustedIssuer, dispatch_uid=f"{uid}.issuer_saved")
    pre_delete.connect(_policy_deleting, sender=ClientPolicy, dispatch_uid=f"{uid}.policy_deleting")
    post_save.connect(_user_saved, sender=get_user_model(), dispatch_uid=f"{uid}.user_saved")
    m2m_changed.connect(
        _policy_issuers_changed, sender=ClientPolicy.trusted_issuers.through, dispatch_uid=f"{uid}.policy"
    )
