"""DRF views of the example resource server, and one plain Django view.

``aggregates`` answers any valid token meant for this service (an impersonated one too: the
customer's support may look at the customer's data); ``settings`` is privileged and refuses
impersonated tokens. Each answer shows what the service learned from the token.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from token_exchange.contrib.rest_framework import JWTAccessTokenAuthentication, NotImpersonated
from token_exchange.impersonation.guard import get_actor, refuse_impersonated
from token_exchange.resource_server import VerifiedAccessToken, jwt_access_token_required


def described(request: Any, mode: str) -> dict[str, Any]:
    token: VerifiedAccessToken = request.auth
    return {
        "mode": mode,
        "sub": token.sub,
        "client_id": token.client_id,
        "scope": token.scope,
        "aud": list(token.aud),
        "act": get_actor(request),
    }


class IntrospectedAggregates(APIView):
    """DOT's OAuth2Authentication, answered by token_exchange's IntrospectionValidator."""

    authentication_classes = [OAuth2Authentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Any) -> Response:
        return Response(described(request, "introspection"))


class IntrospectedSettings(IntrospectedAggregates):
    permission_classes = [IsAuthenticated, NotImpersonated]


class JWTAggregates(APIView):
    """RFC 9068 JWT access tokens, verified against the issuer's JWKS."""

    authentication_classes = [JWTAccessTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Any) -> Response:
        return Response(described(request, "jwt"))


class JWTSettings(JWTAggregates):
    permission_classes = [IsAuthenticated, NotImpersonated]


@jwt_access_token_required
@refuse_impersonated
def plain_jwt_settings(request: HttpRequest) -> JsonResponse:
    """The same without DRF: the decorator authenticates, then the guard reads act."""
    return JsonResponse(described(request, "jwt"))
