"""The API host of a site that is both authorization server and resource server: a URLconf a
per-host router (``request.urlconf``, as django-hosts sets it) gives the API's host, without the
token endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.urls import path

from tests.urls_with_drf import AccountSettings

urlpatterns = [path("drf/account/", AccountSettings.as_view())]


class HostURLconf:
    """Routes the host ``api.example.com`` to this URLconf."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        if request.get_host() == "api.example.com":
            request.urlconf = "tests.urls_api_host"
        return self.get_response(request)
