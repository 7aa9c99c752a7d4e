"""The example project's URLs plus two DRF views: one privileged, one reporting the actor."""

from __future__ import annotations

from typing import Any

from django.urls import path
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from example_project.urls import urlpatterns as example_urlpatterns
from token_exchange.contrib.rest_framework import NotImpersonated, get_actor


class AccountSettings(APIView):
    authentication_classes = [OAuth2Authentication]
    permission_classes = [IsAuthenticated, NotImpersonated]

    def get(self, request: Any) -> Response:
        return Response({"sub": str(request.user.pk)})


class Orders(APIView):
    authentication_classes = [OAuth2Authentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Any) -> Response:
        return Response({"sub": str(request.user.pk), "act": get_actor(request)})


urlpatterns = [
    *example_urlpatterns,
    path("drf/account/", AccountSettings.as_view()),
    path("drf/orders/", Orders.as_view()),
]
