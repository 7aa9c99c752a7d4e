"""The example's URLs plus a DOT ``ClientProtectedResourceView``: DOT's documented way to protect
an API with client credentials, as a site using this package's validator might add one."""

from typing import Any

from django.http import HttpRequest, JsonResponse
from django.urls import path
from oauth2_provider.views.generic import ClientProtectedResourceView

from example_project.urls import urlpatterns as example


class ClientOnly(ClientProtectedResourceView):  # type: ignore[misc]
    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        return JsonResponse({"ok": True})


urlpatterns = [*example, path("client-only/", ClientOnly.as_view())]
