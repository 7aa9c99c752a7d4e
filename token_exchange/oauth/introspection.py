"""RFC 7662 token introspection: who may ask, and what they learn.

``token_exchange.urls`` mounts :class:`IntrospectTokenView` under DOT's URL name ``introspect``.

Who may ask (RFC 7662 §2.1, §4): a **confidential** client that authenticates (client_secret_basic,
client_secret_post or private_key_jwt, through the validator's ``authenticate_client``) and whose
``ClientPolicy.introspection`` is set. DOT's resource-server mode may instead send a Bearer token
with the ``introspection`` scope (``RESOURCE_SERVER_AUTH_TOKEN``); the token's client is then the
one asking, under the same rule. Anyone else gets ``401 invalid_client`` (RFC 7662 §2.3, RFC 6749
§5.2): a public client proves nothing by sending its client_id, so it never may.

What they learn: with ``introspection = "audience"``, a token whose audience (the definition of
``tokens.base.access_token_claims``) names the client's client_id or one of its
``resource_uris``; with ``"any"``, every token. Everything else reads ``{"active": false}``,
exactly as an unknown, expired or revoked token does, so a client cannot tell a token meant for
someone else from one that does not exist (no token scanning, RFC 7662 §4).

The token travels in the POST body only: the query string ends up in logs and proxies.

An exchanged token is active only while the authorization it descends from lives (its lineage,
one more query for such tokens only) and, when issued under an admin-started
impersonation, while that session may go on (``impersonation_sessions``). Ends DOT has no hook
for (a logout that deletes tokens, reuse detection revoking a family, expiry) are found here, as
on refresh: the token reads inactive and what hangs off the ended authorization is revoked.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any
from urllib.parse import urlencode

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from oauth2_provider.compat import login_not_required
from oauth2_provider.oauth2_backends import get_oauthlib_core
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request
from oauthlib.oauth2.rfc6749 import errors

from token_exchange.client_ids import is_confusable
from token_exchange.constants import ACT, BEARER, INTROSPECT_ANY, INTROSPECT_AUDIENCE
from token_exchange.exceptions import ReplayStoreUnavailable
from token_exchange.impersonation import decision as impersonation_decision
from token_exchange.issuance import lineage
from token_exchange.oauth.views import SENSITIVE_POST_PARAMETERS, FormEndpoint
from token_exchange.parameters import storable
from token_exchange.tokens import access_token_claims, load_access_token

logger = logging.getLogger("token_exchange")

# DOT's scope for a Bearer token that may call the introspection endpoint.
INTROSPECTION_SCOPE = "introspection"
# RFC 6749 §2.3.1, RFC 7662 §2.1: credentials and the token go in the body, never in the URL.
BODY_ONLY_PARAMETERS = frozenset(
    {"token", "token_type_hint", "client_id", "client_secret", "client_assertion", "client_assertion_type"}
)
INACTIVE: dict[str, Any] = {"active": False}


# The decision ---------------------------------------------------------------------------------


def may_introspect(*, confidential: bool, permission: str) -> bool:
    """May an authenticated client call the introspection endpoint at all?"""
    return confidential and permission in (INTROSPECT_AUDIENCE, INTROSPECT_ANY)


def may_learn_about(
    *,
    confidential: bool,
    permission: str,
    client_id: str,
    resource_uris: Collection[str],
    audience: Collection[str],
) -> bool:
    """May client ``client_id`` learn about a live token whose audience is ``audience``?

    ``permission`` is its ``ClientPolicy.introspection``; ``resource_uris`` the resource
    indicators it serves. Values are compared as strings, as RFC 8707 resource indicators are.
    """
    if not may_introspect(confidential=confidential, permission=permission):
        return False
    if permission == INTROSPECT_ANY:
        return True
    return bool(client_id) and (client_id in audience or any(uri in audience for uri in resource_uris))


# The view -------------------------------------------------------------------------------------


def _epoch(moment: Any) -> int:
    return int(moment.timestamp())


def _json(
    body: str | dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    response = (
        JsonResponse(body, status=status)
        if isinstance(body, dict)
        else HttpResponse(body, status=status, content_type="application/json")
    )
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def _scheme(request: HttpRequest) -> str:
    """The scheme of the Authorization header, lowercased ("" without one)."""
    parts = (request.headers.get("Authorization") or "").split(None, 1)
    return parts[0].lower() if parts else ""


def _policy_of(application: Any) -> tuple[str, frozenset[str]]:
    """(``introspection``, ``resource_uris``) of the application's ClientPolicy; no row: nothing."""
    policy = getattr(application, "token_exchange_policy", None) if application is not None else None
    if policy is None:
        return "", frozenset()
    uris = policy.resource_uris if isinstance(policy.resource_uris, list) else []
    return str(policy.introspection or ""), frozenset(uri for uri in uris if isinstance(uri, str))


@method_decorator(csrf_exempt, name="dispatch")
@method_decorator(login_not_required, name="dispatch")
@method_decorator(sensitive_post_parameters(*SENSITIVE_POST_PARAMETERS, "token"), name="dispatch")
class IntrospectTokenView(FormEndpoint, View):
    """RFC 7662 introspection with the JWT claims of the token: sub, iss, aud, jti, iat, act.

    Replaces DOT's ``IntrospectTokenView``, which answers anyone who authenticates (a public
    client by its client_id alone), any token, a GET with the token in the URL, and a bare 403.
    """

    http_method_names = ["post"]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().dispatch(request, *args, **kwargs)
        # RFC 7662 §4 / RFC 6749 §5.1: an introspection response is about a credential.
        response["Cache-Control"] = "no-store"
        response["Pragma"] = "no-cache"
        return response

    def http_method_not_allowed(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        error = errors.InvalidRequestError(
            description="Introspection takes a POST with the token in the body.", status_code=405
        )
        return _json(error.json, error.status_code, {"Allow": "POST"})

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if BODY_ONLY_PARAMETERS & set(request.GET):
            error = errors.InvalidRequestError(
                description="Send the token and the client's credentials in the request body, not the URL."
            )
            return _json(error.json, error.status_code)
        try:
            client = self.authenticated_client(request)
        except ReplayStoreUnavailable as unavailable:
            # A correctly signed client assertion whose jti the replay store could not check:
            # neither authenticated nor bad credentials. 503, the client may retry.
            return _json(unavailable.json, unavailable.status_code, unavailable.headers)
        permission, resource_uris = _policy_of(client)
        if client is None or not may_introspect(
            confidential=client.client_type == client.CLIENT_CONFIDENTIAL, permission=permission
        ):
            if client is not None:
                logger.info(
                    "Introspection refused for client %s: not allowed to introspect", client.client_id
                )
            return self.unauthenticated(request)
        token_value = request.POST.get("token")
        if not token_value:
            error = errors.InvalidRequestError(description="Token parameter is missing.")
            return _json(error.json, error.status_code)
        token = load_access_token(token_value) if storable(token_value) else None
        if token is None or not token.is_valid():
            return _json(INACTIVE)
        claims = access_token_claims(token)
        if not may_learn_about(
            confidential=True,
            permission=permission,
            client_id=client.client_id,
            resource_uris=resource_uris,
            audience=claims["audience"],
        ):
            # Reads as an unknown token; the reason is for the log only.
            logger.info(
                "Introspection by %s of %s: not in its audience", client.client_id, claims["reference"]
            )
            return _json(INACTIVE)
        if self.ended(token, claims):
            return _json(INACTIVE)
        return _json(self.token_claims(request, token, claims))

    def ended(self, token: Any, claims: dict[str, Any]) -> bool:
        """Has an exchanged token ended in a way that had no hook? Then it is revoked now (with
        everything that hangs off its ended authorization, or its ended session)."""
        reason = lineage.refuse_if_ended(token, subject=token.user, application=token.application)
        if reason is None and claims["impersonation_id"] is not None:
            reason = impersonation_decision.session_refusal(claims["impersonation_id"])
        if reason is None:
            return False
        logger.info("Introspection of %s: inactive, %s", claims["reference"], reason)
        return True

    def authenticated_client(self, request: HttpRequest) -> Any:
        """The Application asking, authenticated; or None.

        Client credentials go to the validator's ``authenticate_client`` through DOT's public
        backend (``get_oauthlib_core``), as DOT's own view does; a Bearer token to DOT's
        ``verify_request`` with the ``introspection`` scope. A client_id that reads as a
        resource indicator (``client_ids.is_confusable``) is nobody.

        :class:`ReplayStoreUnavailable` goes through to ``post``: the client's assertion could not
        be checked for a replay, which is neither a yes nor a no.
        """
        core = get_oauthlib_core()
        try:
            if _scheme(request) == "bearer":
                valid, oauth_request = core.verify_request(request, scopes=[INTROSPECTION_SCOPE])
                access_token = getattr(oauth_request, "access_token", None) if valid else None
                client = getattr(access_token, "application", None)
            else:
                oauth_request = Request(
                    request.build_absolute_uri(),
                    http_method="POST",
                    body=urlencode(list(core.extract_body(request))),
                    headers=core.extract_headers(request),
                )
                authenticated = core.server.request_validator.authenticate_client(oauth_request)
                client = oauth_request.client if authenticated else None
        except ValueError:  # oauthlib: "Invalid hex encoding in query string."
            client = None
        if client is None:
            logger.info("Introspection refused: client authentication failed")
            return None
        if is_confusable(client.client_id):
            logger.info("Introspection refused for client %s: confusable client_id", client.client_id)
            return None
        return client

    def unauthenticated(self, request: HttpRequest) -> HttpResponse:
        """401 ``invalid_client`` (RFC 6749 §5.2), with a challenge in the scheme the client used;
        without an Authorization header, Basic, which a client may use."""
        error = errors.InvalidClientError(description="Client authentication failed.")
        if _scheme(request) == "bearer":
            challenge = 'Bearer error="invalid_token"'
        else:
            challenge = 'Basic realm="oauth2", charset="UTF-8"'
        return _json(error.json, error.status_code, {"WWW-Authenticate": challenge})

    def token_claims(self, request: HttpRequest, token: Any, claims: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {
            "active": True,
            "scope": token.scope,
            "exp": _epoch(token.expires),
            "iat": _epoch(token.created),
            "nbf": _epoch(token.created),
            "iss": oauth2_settings.oidc_issuer(request),
            "token_type": BEARER,
            "jti": claims["reference"],
        }
        if claims["audience"]:
            data["aud"] = list(claims["audience"])
        if claims["act"] is not None:
            data[ACT] = claims["act"]
        if token.application is not None:
            data["client_id"] = token.application.client_id
        if token.user is not None:
            data["sub"] = str(token.user.pk)
            data["username"] = token.user.get_username()
        return data
