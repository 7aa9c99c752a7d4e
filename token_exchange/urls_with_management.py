"""``token_exchange.urls`` plus DOT's application-management pages, for staff only.

Opt in by including this module instead of ``token_exchange.urls``::

    path("o/", include("token_exchange.urls_with_management")),

The pages (``/o/applications/``, ``/o/applications/register/`` …) keep DOT's URL names and
templates; each needs an active staff user with the matching permission on the application
model, and registration refuses a ``client_id`` that reads as an absolute URI. See
``token_exchange.oauth.client_registration``.
"""

from __future__ import annotations

from token_exchange.urls import app_name, management_urlpatterns
from token_exchange.urls import urlpatterns as _token_exchange_urlpatterns

__all__ = ["app_name", "urlpatterns"]

urlpatterns = [*_token_exchange_urlpatterns, *management_urlpatterns]
