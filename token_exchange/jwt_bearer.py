"""The JWT authorization grant (RFC 7523 §2.1) with a trusted issuer's JWT as the assertion.

``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=<JWT>[&scope=...]``, from a
confidential client that authenticates and whose ``ClientPolicy`` enables the grant and names the
assertion's issuer. The assertion is verified as any trusted issuer's token is
(``federation.assertion``) with RFC 7523 §3's rules on top: its ``aud`` names this server (its
issuer identifier or its token endpoint), never the issuer's configured audiences; it lives at
most ``JWT_BEARER_MAX_LIFETIME_SECONDS``; it has a ``jti``, used once (``replay.consume``, last,
per issuer). Its kind (``at+jwt`` or another JWT) must be one the issuer may present. The
subject is mapped as for a token exchange (``federation.identities``), and the access token
issued is this server's, for the client, with the scope the issuer's row and the client allow;
no refresh token unless ``JWT_BEARER_REFRESH_TOKENS``, and then only with ``offline_access``.

Every refusal of the assertion or of the user it names is ``invalid_grant`` (RFC 7523 §3.1)
with one description; the reason goes to the log and the audit row, as for the exchange.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlsplit

from django.urls import reverse
from oauth2_provider.scopes import get_scopes_backend
from oauthlib.common import Request
from oauthlib.oauth2.rfc6749 import errors

from token_exchange import policy
from token_exchange.conf import token_exchange_settings
from token_exchange.constants import ACCESS_TOKEN_TYPE, JWT_BEARER_GRANT_TYPE, JWT_TYPE
from token_exchange.exceptions import Refusal
from token_exchange.federation import identities
from token_exchange.federation.assertion import FederationRefusal, unverified_issuer, verify
from token_exchange.grant import MAX_TOKEN_LENGTH, TokenExchangeGrant, parse_scope
from token_exchange.issuance import audit
from token_exchange.issuance.lineage import Descent
from token_exchange.issuance.minting import Issuance
from token_exchange.jwt import replay
from token_exchange.models import ClientPolicy, SecuritySettings
from token_exchange.tokens.external import refused


def token_endpoint(issuer: str) -> str:
    """This server's token endpoint URL as its discovery documents name it: DOT's ``token`` URL
    on the issuer's scheme and host (``oauth.metadata``). From the issuer, never from the
    request's Host."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}{reverse('oauth2_provider:token')}"


class InvalidAssertion(Refusal):
    """The assertion, or the user it names, is refused (RFC 7523 §3.1: ``invalid_grant``)."""

    error_class = errors.InvalidGrantError
    parameter = "assertion"


class JwtBearerGrant(TokenExchangeGrant):
    """``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`` (RFC 7523 §2.1)."""

    grant_type = JWT_BEARER_GRANT_TYPE
    signed_jwt_parameter = "assertion"

    def check_client_policy(self, client: Any) -> None:
        client_policy: ClientPolicy | None = getattr(client, "token_exchange_policy", None)
        if client_policy is None or not client_policy.jwt_bearer_enabled:
            raise errors.UnauthorizedClientError(
                description="This client is not allowed to use the JWT authorization grant."
            )

    def issuance(
        self, request: Request, client: Any, security: SecuritySettings, context: audit.AuditContext
    ) -> Issuance:
        assertion, requested_scope = self.parameters(request)
        issuer = self.request_validator.get_oidc_issuer_endpoint(request)
        context.issuer = issuer
        if unverified_issuer(assertion) == issuer:
            # This server's own tokens are never assertions: refused before any trusted issuer is
            # looked up (a row naming this server's issuer would be a misconfiguration).
            raise InvalidAssertion("own_token_as_assertion")
        try:
            token = verify(
                assertion,
                client=client,
                presented_as=JWT_TYPE,
                audiences=(issuer, token_endpoint(issuer)),
                max_lifetime=token_exchange_settings.JWT_BEARER_MAX_LIFETIME_SECONDS,
                jti_required=True,
            )
        except FederationRefusal as error:
            raise refused(InvalidAssertion, error) from error
        context.external = token.described()
        trust = token.trust
        # The scope from the trust and the client alone, before whom the assertion names is
        # looked at: invalid_scope says nothing about the user.
        scope = policy.resolve_scope(
            requested=requested_scope,
            subject_scope=frozenset((trust.scope or "").split()),
            client_scopes=frozenset(
                get_scopes_backend().get_available_scopes(application=client, request=request)
            ),
        )
        try:
            user, link = identities.user_of(token)
        except FederationRefusal as error:
            raise refused(InvalidAssertion, error) from error
        context.subject = user
        # Last, once everything else passed: only a valid assertion uses up its jti.
        if not replay.consume(
            client_id=f"issuer:{trust.issuer}",
            jti=token.claims["jti"],
            expires_at=math.ceil(token.claims["exp"]),
        ):
            raise InvalidAssertion("replayed_jti")
        return Issuance(
            client=client,
            user=user,
            requested_token_type=ACCESS_TOKEN_TYPE,
            scope=scope,
            audience=(client.client_id,),
            resource=(),
            expires_in=self.lifetime(ACCESS_TOKEN_TYPE, None, impersonated=False),
            issue_refresh_token=token_exchange_settings.JWT_BEARER_REFRESH_TOKENS
            and policy.issues_refresh_token(requested_token_type=ACCESS_TOKEN_TYPE, scope=scope),
            issue_id_token=False,
            issuer=issuer,
            subject_claims={},
            audit_context=context,
            lineage=Descent(root=None),
            federated_identity_id=link.pk,
        )

    def parameters(self, request: Request) -> tuple[str, frozenset[str]]:
        values: dict[str, list[str]] = {}
        for key, value in request.decoded_body or []:
            values.setdefault(key, []).append(value)
        assertion = (values.get("assertion") or [""])[0]
        if not assertion:
            raise errors.InvalidRequestError(description="Missing assertion parameter.")
        if len(assertion) > MAX_TOKEN_LENGTH:
            raise errors.InvalidRequestError(description="The assertion is too long.")
        scope = values.get("scope")
        return assertion, parse_scope(scope[0] if scope else None)

    def response(self, minted: dict[str, Any]) -> dict[str, Any]:
        """RFC 6749 §5.1: no ``issued_token_type`` (that is RFC 8693's)."""
        return {key: value for key, value in minted.items() if key != "issued_token_type"}
