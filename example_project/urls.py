from django.contrib import admin
from django.urls import include, path

from example_project.demo import views

urlpatterns = [
    # RFC 8414 §3.1: the metadata of the issuer http://host/o at /.well-known/oauth-authorization-server/o.
    path("", include("token_exchange.urls_well_known")),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("o/", include("token_exchange.urls")),
    path("api/aggregates/", views.aggregates, name="api-aggregates"),
    path("api/settings/", views.settings_api, name="api-settings"),
    path("portal/", views.portal, name="portal"),
]
