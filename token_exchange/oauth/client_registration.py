"""DOT's application-management pages, for staff only, refusing client ids that read as URIs.

``token_exchange.urls`` does not mount DOT's management pages: with them, any logged-in user
could register an OAuth client and choose its ``client_id``, and a client named like a resource
server (``https://api.example.com/``) gets tokens whose audience names that resource. A site
that wants the pages includes ``token_exchange.urls_with_management`` instead, which mounts
these subclasses under DOT's URL names: each needs an active staff user holding the matching
model permission (view, add, change or delete the application), lists only the user's own
applications (as DOT does), and refuses a confusable ``client_id`` (``client_ids``).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.mixins import PermissionRequiredMixin
from django.forms.models import modelform_factory
from oauth2_provider import views as oauth2_views
from oauth2_provider.forms import ApplicationForm
from oauth2_provider.models import get_application_model
from oauth2_provider.views.application import APPLICATION_FIELDS

from token_exchange.client_ids import validate_client_id


class RegistrationForm(ApplicationForm):  # type: ignore[misc]
    """DOT's application form, refusing a client_id that could pass for a resource indicator."""

    def clean_client_id(self) -> Any:
        client_id = self.cleaned_data.get("client_id")
        if isinstance(client_id, str):
            validate_client_id(client_id)
        return client_id


def registration_form_class() -> Any:
    return modelform_factory(get_application_model(), form=RegistrationForm, fields=APPLICATION_FIELDS)


class StaffOnly(PermissionRequiredMixin):
    """An active staff user with ``action`` on the application model; anyone else: a 403 (or, not
    logged in, the login page)."""

    action = "view"

    def get_permission_required(self) -> tuple[str, ...]:
        meta = get_application_model()._meta
        return (f"{meta.app_label}.{self.action}_{meta.model_name}",)

    def has_permission(self) -> bool:
        user = self.request.user  # type: ignore[attr-defined]
        return bool(user.is_active and user.is_staff) and super().has_permission()


class ApplicationList(StaffOnly, oauth2_views.ApplicationList):  # type: ignore[misc]
    action = "view"


class ApplicationDetail(StaffOnly, oauth2_views.ApplicationDetail):  # type: ignore[misc]
    action = "view"


class ApplicationRegistration(StaffOnly, oauth2_views.ApplicationRegistration):  # type: ignore[misc]
    action = "add"

    def get_form_class(self) -> Any:
        return registration_form_class()


class ApplicationUpdate(StaffOnly, oauth2_views.ApplicationUpdate):  # type: ignore[misc]
    action = "change"

    def get_form_class(self) -> Any:
        return registration_form_class()


class ApplicationDelete(StaffOnly, oauth2_views.ApplicationDelete):  # type: ignore[misc]
    action = "delete"


# DOT's URL name of each management page, and the view this package serves it with.
VIEWS: dict[str, Any] = {
    "list": ApplicationList,
    "register": ApplicationRegistration,
    "detail": ApplicationDetail,
    "delete": ApplicationDelete,
    "update": ApplicationUpdate,
}
