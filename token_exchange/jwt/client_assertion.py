"""``private_key_jwt``: a client authenticates with a JWT it signed (RFC 7523 §2.2, OIDC Core §9).

The request carries ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
and ``client_assertion`` in its body. The assertion's ``iss`` and ``sub`` are the client_id (and so
is ``client_id``, if sent); its ``aud`` is this server's issuer identifier or its token endpoint
URL; it is signed with one of the client's active ``ClientKey`` rows; its ``jti`` is used once.

Whatever fails, the client is not authenticated (``invalid_client``, 401) and learns nothing
more; the reason code goes to the log. Unauthenticated requests write no audit rows, so nobody
can fill the audit table without a key. The one answer that is not 401: a replay store that does
not answer about a correctly signed assertion, the server's trouble, is a 503 (``authenticate``).

This is also the one seam between this package's ``private_key_jwt`` and django-oauth-toolkit's
own (RFC 7523 client authentication, on DOT's main branch after 3.4.1): ``ours()`` alone reads
``TOKEN_EXCHANGE["CLIENT_AUTHENTICATION"]``, and the validator (``handles``) and the discovery
documents ask it. ``dot_client_authentication_installed`` alone knows how to tell whether the
installed DOT has its own. See docs/dot-compatibility.md.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import FieldDoesNotExist
from django.urls import reverse
from oauth2_provider.models import get_application_model
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request

from token_exchange import client_ids
from token_exchange.conf import token_exchange_settings
from token_exchange.constants import CLIENT_ASSERTION_TYPE
from token_exchange.db.lookups import PreparedLookup
from token_exchange.jwt import jose, signed_jwt
from token_exchange.models import SecuritySettings
from token_exchange.parameters import storable

logger = logging.getLogger("token_exchange")

PARAMETERS = ("client_assertion", "client_assertion_type")
# The explicit type rfc7523bis gives client assertions, besides the generic JWT.
ASSERTION_TYP = frozenset({"jwt", "client-authentication+jwt"})
# Far above any real assertion (a few hundred bytes), far below anything costly to parse.
MAX_ASSERTION_LENGTH = 8 * 1024
# DOT's client_id column holds 100 characters; anything longer names no client.
MAX_CLIENT_ID_LENGTH = 255


# TOKEN_EXCHANGE["CLIENT_AUTHENTICATION"]: who verifies client assertions.
THIS_PACKAGE = "token_exchange"
DOT = "oauth2_provider"
CLIENT_AUTHENTICATION_CHOICES = (THIS_PACKAGE, DOT)
# The RFC 7523 token_endpoint_auth_method values DOT main knows (its Application.JWT_AUTH_METHODS).
DOT_JWT_METHODS = ("private_key_jwt", "client_secret_jwt")
# Where DOT main keeps authenticate_client_assertion: the module of its PR #1762 (782ef9a1), and
# the one its role-package refactor (990c6b59) moved it to, leaving a shim at the old path.
_DOT_ASSERTION_MODULES = (
    "oauth2_provider.authorization_server.client_assertions",
    "oauth2_provider.client_assertions",
)


def ours() -> bool:
    """Does this package verify client assertions (True), or DOT (False)? The one decision.

    Only ``"oauth2_provider"`` hands them to DOT: any other value keeps this package's
    verification, so a misspelt value never leaves assertions to a path nobody configured
    (and the settings check reports it).
    """
    return token_exchange_settings.CLIENT_AUTHENTICATION != DOT


def handles(request: Request) -> bool:
    """Is this request's client authenticated here, by its assertion (and by nothing else)?"""
    return presented(request) and ours()


def unverifiable(request: Request) -> bool:
    """Does the request carry an assertion that nobody here can verify: handed to a DOT without
    JWT client authentication (``E011``)? Such a request is refused, never authenticated by
    something else it carries (a secret, or a public client's bare ``client_id``): RFC 6749 §2.3
    allows one method per request, and an assertion must not be silently ignored."""
    return presented(request) and not ours() and not dot_client_authentication_installed()


def dot_client_authentication_installed() -> bool:
    """Can the installed DOT itself authenticate a client by a JWT assertion (RFC 7523 §2.2)?

    DOT has no flag saying so. Checked against DOT main at 782ef9a1 (PR #1762) and 0f9d49f4: its
    application model has ``client_jwks`` (migration 0024) and its ``OAuth2Validator`` hands a
    request carrying ``client_assertion`` to ``authenticate_client_assertion`` in one of
    ``_DOT_ASSERTION_MODULES``. Both are required: the fields of a custom application model
    authenticate nobody without DOT's code, nor DOT's code without the fields. False on 3.4.1.
    Should DOT grow a public flag, read that here instead.
    """
    try:
        get_application_model()._meta.get_field("client_jwks")
    except FieldDoesNotExist:
        return False
    for name in _DOT_ASSERTION_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if callable(getattr(module, "authenticate_client_assertion", None)):
            return True
    return False


def dot_advertised_jwt_methods() -> list[str]:
    """The RFC 7523 methods DOT's discovery settings advertise: DOT's documented opt-in."""
    advertised = [
        *oauth2_settings.OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED,
        *oauth2_settings.OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED,
    ]
    return [method for method in DOT_JWT_METHODS if method in advertised]


def dot_client_authentication_enabled() -> bool:
    """Is DOT's own JWT client authentication switched on: installed, and advertised?

    DOT main's validator takes any assertion that reaches it, but a site opts in by listing a
    JWT method in ``OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED`` or
    ``OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED`` (and per client, in the database, with
    ``token_endpoint_auth_method``, which no system check reads).
    """
    return bool(dot_advertised_jwt_methods()) and dot_client_authentication_installed()


class AssertionRefusal(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def presented(request: Request) -> bool:
    """Did the client try ``private_key_jwt`` (in the body or, wrongly, in the query)?"""
    names = {key for key, _value in request.decoded_body or []}
    names |= {key for key, _value in request.uri_query_params}
    return bool(names & set(PARAMETERS))


def token_endpoint(issuer: str) -> str:
    """The token endpoint URL exactly as discovery advertises it (same host as the issuer)."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}{reverse('oauth2_provider:token')}"


def _single(body: list[tuple[str, str]], name: str) -> str:
    values = [value for key, value in body if key == name]
    if len(values) != 1 or not values[0]:
        raise AssertionRefusal(f"missing_or_repeated_{name}")
    return values[0]


def basic_auth(request: Request) -> bool:
    """Does the request carry HTTP Basic credentials (client_secret_basic)?"""
    scheme = (request.headers.get("HTTP_AUTHORIZATION") or request.headers.get("Authorization") or "").split()
    return bool(scheme) and scheme[0].lower() == "basic"


def load_client(client_id: str) -> Any:
    """The Application with ``client_id``, its token exchange policy and the instance's
    ``SecuritySettings`` (``SecuritySettings.of(client)``), in one query, or None."""
    return _CLIENT.get(client_id)


# Compiled once per connection: with its four settings subqueries, building this queryset costs
# three times what PostgreSQL takes to answer it (docs/performance.md).
_CLIENT = PreparedLookup(
    lambda: SecuritySettings.with_security_settings(
        get_application_model().objects.select_related("token_exchange_policy")
    ),
    "client_id",
)


def verify(request: Request, *, issuer: str) -> Any:
    """The Application that signed the request's assertion, or :class:`AssertionRefusal`."""
    if set(PARAMETERS) & {key for key, _value in request.uri_query_params}:
        raise AssertionRefusal("assertion_in_query")
    body: list[tuple[str, str]] = list(request.decoded_body or [])
    if _single(body, "client_assertion_type") != CLIENT_ASSERTION_TYPE:
        raise AssertionRefusal("unsupported_assertion_type")
    assertion = _single(body, "client_assertion")
    # RFC 6749 §2.3: one authentication method per request.
    if basic_auth(request) or any(key == "client_secret" for key, _value in body):
        raise AssertionRefusal("several_authentication_methods")
    if len(assertion) > MAX_ASSERTION_LENGTH:
        raise AssertionRefusal("assertion_too_long")
    try:
        _header, unverified = jose.peek(assertion)
    except jose.JoseError as exc:
        raise AssertionRefusal("malformed_assertion") from exc

    client_id = unverified.get("iss")
    if not isinstance(client_id, str) or not client_id or unverified.get("sub") != client_id:
        raise AssertionRefusal("sub_is_not_iss")
    if any(key == "client_id" and value != client_id for key, value in body):
        raise AssertionRefusal("client_id_mismatch")
    if len(client_id) > MAX_CLIENT_ID_LENGTH or not storable(client_id):
        raise AssertionRefusal("unknown_client")
    if client_ids.names_no_client(client_id):
        raise AssertionRefusal("confusable_client_id")
    # Straight to the table: DOT's _load_application may fetch a client metadata document
    # named by the client_id, and an unverified iss must never make this server fetch anything.
    application, keys = signed_jwt.keys_of(client_id)
    if application is None:
        application = load_client(client_id)  # a client without keys: refused below, with a reason
    if application is None:
        raise AssertionRefusal("unknown_client")
    if application.client_type != application.CLIENT_CONFIDENTIAL or not application.is_usable(request):
        raise AssertionRefusal("client_cannot_use_private_key_jwt")
    try:
        signed_jwt.verify(
            assertion,
            application=application,
            audiences={issuer, token_endpoint(issuer)},
            allowed_typ=ASSERTION_TYP,
            keys=keys,
        )
    except signed_jwt.JWTRefusal as exc:
        raise AssertionRefusal(exc.reason) from exc
    return application


def authenticate(request: Request, *, issuer: str) -> bool:
    """Authenticate the client by its assertion; on success ``request.client`` is set.

    :class:`~token_exchange.exceptions.ReplayStoreUnavailable` is let through on purpose: the
    assertion could not be checked for a replay, which says nothing against the client's
    credentials, so it must not read as ``invalid_client``. oauthlib's grants and revocation
    endpoint answer an ``OAuth2Error`` raised here as it says (503 ``temporarily_unavailable``);
    the token exchange grant and the introspection view catch it themselves. Only an assertion
    signed with one of the client's keys, and otherwise valid, gets that far
    (``signed_jwt.verify`` asks the replay store last), so nobody else can tell from the answers
    whether the store is up.
    """
    try:
        application = verify(request, issuer=issuer)
    except AssertionRefusal as refusal:
        logger.info("Client assertion refused: %s", refusal.reason)
        return False
    request.client = application
    request.client_id = application.client_id
    return True
