"""The aggregates API twice: verified by introspection, and offline as JWT access tokens."""

from __future__ import annotations

from django.urls import path

from . import views

urlpatterns = [
    path("introspected/aggregates/", views.IntrospectedAggregates.as_view()),
    path("introspected/settings/", views.IntrospectedSettings.as_view()),
    path("jwt/aggregates/", views.JWTAggregates.as_view()),
    path("jwt/settings/", views.JWTSettings.as_view()),
    path("plain/jwt/settings/", views.plain_jwt_settings),
]
