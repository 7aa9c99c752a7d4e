"""Django REST framework helpers: keep impersonated tokens out, and read who is acting.

    from oauth2_provider.contrib.rest_framework import OAuth2Authentication
    from token_exchange.contrib.rest_framework import NotImpersonated, get_actor

    class SettingsView(APIView):
        authentication_classes = [OAuth2Authentication]
        permission_classes = [IsAuthenticated, NotImpersonated]

Requires the ``rest_framework`` extra (``pip install django-token-exchange[rest_framework]``).
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission

from ..guard import REFUSAL, get_actor

__all__ = ["NotImpersonated", "get_actor"]


class NotImpersonated(BasePermission):  # type: ignore[misc]
    """Refuses (403) requests whose OAuth2 access token carries an ``act`` claim."""

    message = REFUSAL["error_description"]
    code = REFUSAL["error"]

    def has_permission(self, request: Any, view: Any) -> bool:
        return get_actor(request) is None
