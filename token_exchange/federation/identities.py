"""Who a trusted issuer's verified subject is here.

A ``FederatedIdentity`` (issuer + ``sub``) names the local user; without one, the resolver
(``FEDERATION_RESOLVER``, by default :func:`resolve`) may find or create the user, and the link is
then written, so the next token of that subject finds it directly and withdrawing it
(``withdrawal``) reaches every token issued for it. Every way of not finding a user (unlinked,
ambiguous, inactive) is one refusal to the client, whatever the reason code says in the log.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, router, transaction

from token_exchange.conf import token_exchange_settings
from token_exchange.federation.assertion import FederationRefusal, VerifiedExternalToken
from token_exchange.models import FederatedIdentity, TrustedIssuer


def user_of(token: VerifiedExternalToken) -> tuple[Any, FederatedIdentity]:
    """The active local user ``token``'s subject stands for, and its link; else
    :class:`FederationRefusal` (carrying ``token``, for the audit row).

    A subject nobody linked goes to the resolver; the user it finds is linked automatically
    (under a savepoint: two first tokens at once end in one link, or one refusal, never a
    broken transaction). Staff and superusers (``IS_ADMIN_SUBJECT``) are reached only through a
    link an admin made, whatever a resolver says and whenever they became one.
    """
    link = _link(token)
    if link is None:
        try:
            with transaction.atomic(using=router.db_for_write(FederatedIdentity)):
                user = token_exchange_settings.FEDERATION_RESOLVER(token.trust, token.claims)
                if user is None:
                    raise FederationRefusal("unlinked_subject", token)
                _check(user, automatic=True, token=token)
                link, _created = FederatedIdentity.objects.get_or_create(
                    issuer=token.trust,
                    subject=token.subject,
                    defaults={"user": user, "linked_by": FederatedIdentity.LinkedBy.AUTOMATIC},
                )
        except IntegrityError:
            # Another request linked (or created) it first: its link, if it made one.
            link = _link(token)
            if link is None:
                raise FederationRefusal("unlinked_subject", token) from None
    _check(link.user, automatic=link.linked_by != FederatedIdentity.LinkedBy.ADMIN, token=token)
    return link.user, link


def _link(token: VerifiedExternalToken) -> FederatedIdentity | None:
    found: FederatedIdentity | None = (
        FederatedIdentity.objects.select_related("user")
        .filter(issuer=token.trust, subject=token.subject)
        .first()
    )
    return found


def _check(user: Any, *, automatic: bool, token: VerifiedExternalToken) -> None:
    if not user.is_active:
        raise FederationRefusal("inactive_user", token)
    if automatic and token_exchange_settings.IS_ADMIN_SUBJECT(user):
        raise FederationRefusal("admin_subject_not_linked_by_an_admin", token)


def resolve(trust: TrustedIssuer, claims: dict[str, Any]) -> Any:
    """The default resolver of an unlinked subject: with ``match_verified_email``, the one
    active user with the token's email when ``email_verified`` is exactly ``true`` and that user
    is no staff member or superuser (an issuer vouching for an email cannot hand out an admin);
    with ``create_users``, a new user when nobody matched. Else None."""
    User = get_user_model()
    email = claims.get("email")
    # ASCII only, compared exactly once lowercased: the database's case folding would match
    # a long s (U+017F) to an s, or a dotless i (U+0131) to an i (PostgreSQL's UPPER).
    verified = (
        claims.get("email_verified") is True
        and isinstance(email, str)
        and "@" in email
        and email.isascii()
        and email.isprintable()  # no NUL (PostgreSQL refuses it) nor any other control character
    )
    email_field = User.get_email_field_name()
    if trust.match_verified_email and verified and isinstance(email, str):
        candidates = User._default_manager.filter(**{f"{email_field}__iexact": email, "is_active": True})
        matches = [
            user
            for user in candidates[:3]
            if str(getattr(user, email_field, "")).lower() == email.lower()  # ASCII, both sides
        ]
        if len(matches) > 1:
            return None  # two users, one email: nobody can tell which
        if matches:
            user = matches[0]
            return None if token_exchange_settings.IS_ADMIN_SUBJECT(user) else user
    if trust.create_users:
        digest = hashlib.sha256(f"{trust.issuer}\n{claims['sub']}".encode()).hexdigest()[:24]
        username = f"federated-{digest}"
        if User._default_manager.filter(**{User.USERNAME_FIELD: username}).exists():
            # Created for this subject before, and its link since deleted: an admin withdrew it.
            # Creating the user again would fail; handing the old one back would undo the
            # withdrawal. Linking it again is an admin's decision.
            return None
        fields: dict[str, Any] = {User.USERNAME_FIELD: username}
        if verified:
            fields[email_field] = email
        return User._default_manager.create_user(**fields)
    return None
