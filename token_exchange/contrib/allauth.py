"""A ``FEDERATION_RESOLVER`` for a site that signs its users in with django-allauth: a trusted
issuer's token is accepted for the user who already signs in here with that provider account,
without linking anyone again.

    TOKEN_EXCHANGE = {"FEDERATION_RESOLVER": "token_exchange.contrib.allauth.resolve"}

and, on the trusted issuer, ``provider_id`` set to the ``SocialAccount.provider`` of that
provider's accounts: the ``SocialApp``'s provider id for an OpenID Connect app
(``allauth.socialaccount.providers.openid_connect``), else the provider's own id (``google``).

Requires ``allauth.socialaccount`` in ``INSTALLED_APPS`` (the ``allauth`` extra, ``pip install
django-token-exchange[allauth]``, or the site's own allauth). Nothing here imports allauth before a
subject needs resolving, so importing ``token_exchange`` never does.
"""

from __future__ import annotations

from typing import Any

from token_exchange.federation import identities
from token_exchange.models import TrustedIssuer


def resolve(trust: TrustedIssuer, claims: dict[str, Any]) -> Any:
    """The user of the allauth social account the token's subject signs in with here
    (:func:`social_account_user`); else the default resolver's answer
    (:func:`token_exchange.federation.identities.resolve`: the trust's email matching and user
    creation options), so a site keeps those. The user returned is then linked to the subject
    (``FederatedIdentity``); an inactive one is refused afterwards, as any linked user is."""
    user = social_account_user(trust, claims)
    return user if user is not None else identities.resolve(trust, claims)


def social_account_user(trust: TrustedIssuer, claims: dict[str, Any]) -> Any:
    """The user of the ``SocialAccount`` whose ``provider`` is ``trust.provider_id`` and whose
    ``uid`` is the token's ``sub``; None when the trust names no provider or no account matches.

    What allauth stores as ``uid`` (checked against django-allauth 65.19 to 65.22): the ``sub`` for
    OpenID Connect apps (``openid_connect``, unless the app's settings name another
    ``uid_field``), Google (the ID token's ``sub``, or the userinfo ``id``, which is the same
    value), Apple, Auth0 and Okta (unless ``uid_field`` is set). Not for Microsoft
    (``microsoft``): its ``uid`` is the Microsoft Graph user ``id`` (an Entra ID token's ``oid``),
    while the ``sub`` of its ID tokens is another, per-application value; such accounts never
    match, and the default resolver answers instead. For Entra ID, sign in through an
    ``openid_connect`` app, whose uid is the ``sub``.
    """
    if not trust.provider_id:
        return None
    # Imported here: this module is imported by whoever names it (the setting, the system check
    # of FEDERATION_RESOLVER, a test importing every module), and allauth's models load only in a
    # site that has allauth.socialaccount in INSTALLED_APPS.
    from allauth.socialaccount.models import SocialAccount

    # A staff member or superuser found here is still refused: a link made automatically (by any
    # resolver) never reaches them (identities.user_of); an admin links them by hand. Only ``sub``
    # is compared: an issuer never reassigns it (OpenID Connect Core §2), unlike the usernames or
    # emails some providers' uids are.
    account = (
        SocialAccount.objects.select_related("user")
        .filter(provider=trust.provider_id, uid=claims["sub"])
        .first()
    )
    return None if account is None else account.user
