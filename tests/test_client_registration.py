"""Who may register an OAuth client, and which client ids nobody may have.

``token_exchange.urls`` leaves out DOT's application-management pages (any logged-in user could
register a client and choose its client_id); ``token_exchange.urls_with_management`` mounts them
for staff with the application model's permissions. A client_id that reads as an absolute URI
could pass for a resource server in a token's audience: registration refuses it, E013 reports
existing ones (tests/test_checks.py), and such a client authenticates nowhere.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import NoReverseMatch, include, path, reverse
from oauth2_provider.models import get_application_model

from example_project.demo import data
from token_exchange.client_ids import is_confusable, validate_client_id
from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, INTROSPECT_ANY
from token_exchange.models import ClientPolicy

from .client_jwt import assertion, assertion_form, register_key
from .conftest import basic, make_app

Application = get_application_model()
OPT_IN = "tests.test_client_registration"

# The opt-in, as a site writes it (this module is the URLconf of the tests that set it).
urlpatterns = [
    path("o/", include("token_exchange.urls_with_management")),
    path("accounts/", include("django.contrib.auth.urls")),
]

MANAGEMENT_PAGES = ["/o/applications/", "/o/applications/register/"]


def registration_form(client_id: str, name: str = "billing") -> dict[str, Any]:
    return {
        "name": name,
        "client_id": client_id,
        "client_secret": "a-long-generated-secret-0123456789",
        "hash_client_secret": "on",
        "client_type": Application.CLIENT_CONFIDENTIAL,
        "authorization_grant_type": Application.GRANT_CLIENT_CREDENTIALS,
        "redirect_uris": "",
        "post_logout_redirect_uris": "",
        "allowed_origins": "",
        "algorithm": "",
    }


def browser(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def staff(django_user_model: Any) -> Any:
    """A staff user who may view, add, change and delete applications."""
    user = django_user_model.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    meta = Application._meta
    user.user_permissions.add(
        *Permission.objects.filter(
            content_type__app_label=meta.app_label,
            codename__in=[f"{action}_{meta.model_name}" for action in ("view", "add", "change", "delete")],
        )
    )
    return user


@pytest.fixture
def narrow_staff(django_user_model: Any) -> Any:
    """Staff, but with no right on applications (the demo's support users)."""
    return django_user_model.objects.create_user("helpdesk", "helpdesk@example.com", "pw", is_staff=True)


# Not mounted by default -------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("page", MANAGEMENT_PAGES)
def test_an_end_user_cannot_reach_the_management_pages(end_user, page):
    assert browser(end_user).get(page).status_code == 404


@pytest.mark.django_db
def test_an_end_user_cannot_register_a_client_named_like_a_resource(end_user):
    response = browser(end_user).post("/o/applications/register/", registration_form(data.AGGREGATES_URI))
    assert response.status_code == 404
    assert not Application.objects.filter(client_id=data.AGGREGATES_URI).exists()


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["list", "register", "detail", "update", "delete"])
def test_the_management_url_names_are_not_mounted(name):
    kwargs = {"pk": 1} if name in ("detail", "update", "delete") else {}
    with pytest.raises(NoReverseMatch):
        reverse(f"oauth2_provider:{name}", kwargs=kwargs)


@pytest.mark.django_db
def test_a_user_still_sees_and_revokes_the_tokens_they_authorized(end_user, user_tokens):
    """Per user, and only the user's own: these stay mounted."""
    page = browser(end_user).get(reverse("oauth2_provider:authorized-token-list"))
    assert page.status_code == 200
    assert b"portal" in page.content


# Opted in: staff only -----------------------------------------------------------------------------


@pytest.fixture
def opted_in(settings: Any) -> None:
    settings.ROOT_URLCONF = OPT_IN


@pytest.mark.django_db
@pytest.mark.usefixtures("opted_in")
@pytest.mark.parametrize("page", MANAGEMENT_PAGES)
def test_opted_in_an_end_user_is_refused(end_user, page):
    assert browser(end_user).get(page).status_code == 403


@pytest.mark.django_db
@pytest.mark.usefixtures("opted_in")
def test_opted_in_a_staff_user_without_the_permission_is_refused(narrow_staff):
    client = browser(narrow_staff)
    assert client.get("/o/applications/").status_code == 403
    assert client.post("/o/applications/register/", registration_form("billing")).status_code == 403
    assert not Application.objects.filter(client_id="billing").exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("opted_in")
def test_opted_in_nobody_logged_in_goes_to_the_login_page():
    response = Client().get("/o/applications/register/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


@pytest.mark.django_db
@pytest.mark.usefixtures("opted_in")
def test_opted_in_staff_register_a_client(staff):
    response = browser(staff).post("/o/applications/register/", registration_form("billing"))
    assert response.status_code == 302, response.content
    assert Application.objects.get(client_id="billing").user == staff


@pytest.mark.django_db
@pytest.mark.usefixtures("opted_in")
@pytest.mark.parametrize("client_id", [data.AGGREGATES_URI, "urn:example:api", "localhost:8000"])
def test_opted_in_registration_refuses_a_client_id_that_reads_as_a_uri(staff, client_id):
    response = browser(staff).post("/o/applications/register/", registration_form(client_id))
    assert response.status_code == 200
    assert "client_id" in response.context["form"].errors
    assert response.context["form"].errors["client_id"][0].startswith("A client ID must not look like")
    assert not Application.objects.filter(client_id=client_id).exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("opted_in")
def test_opted_in_an_update_cannot_rename_a_client_to_a_uri(staff):
    application = make_app("billing", exchange=None, user=staff)
    form = registration_form(data.AGGREGATES_URI, name="billing")
    response = browser(staff).post(f"/o/applications/{application.pk}/update/", form)
    assert response.status_code == 200
    assert "client_id" in response.context["form"].errors
    application.refresh_from_db()
    assert application.client_id == "billing"


# The rule ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_id", "confusable"),
    [
        ("https://crm.example.com/", True),
        ("http://127.0.0.1:8000/o", True),
        ("urn:ietf:params:oauth:token-type:jwt", True),
        ("HTTPS://api.example.com", True),
        ("localhost:8000", True),
        ("mailto:x", True),
        ("portal", False),
        ("portal-spa", False),
        ("127.0.0.1:8000", False),
        ("8ab1f0c2c7", False),
        (":8000", False),
        ("", False),
        ("api.example.com/path", False),
    ],
)
def test_is_confusable(client_id, confusable):
    assert is_confusable(client_id) is confusable
    if confusable:
        with pytest.raises(Exception, match="must not look like an absolute URI"):
            validate_client_id(client_id)
    else:
        validate_client_id(client_id)


# Runtime: a confusable client authenticates nowhere --------------------------------------------
# Needs TokenExchangeValidator._load_application to refuse such ids (and the private_key_jwt
# lookup, client_assertion.verify, likewise).


CONFUSABLE = "https://api.example.com/"


@pytest.fixture
def confusable_client(db: None) -> Any:
    """A confidential client with a known secret, a key, token exchange and introspection on."""
    app = make_app("confusable", client_id=CONFUSABLE, authorization_grant_type="client-credentials")
    ClientPolicy.objects.filter(application=app).update(introspection=INTROSPECT_ANY)
    return app


def _post(live_server: Any, path_: str, form: dict[str, Any], app: Any | None = None) -> Any:
    """client_secret_basic with both parts form-urlencoded (RFC 6749 §2.3.1): the colons of the
    client_id must not split it."""
    headers = {"Authorization": basic(app.client_id, app.plain_secret)} if app is not None else {}
    return requests.post(f"{live_server.url}{path_}", data=form, headers=headers, timeout=30)


def _refused(response: Any) -> None:
    assert response.status_code == 401, response.text[:300]
    assert response.json()["error"] == "invalid_client"


@pytest.mark.django_db(transaction=True)
def test_the_same_client_under_a_plain_client_id_gets_a_token(live_server, confusable_client):
    """The baseline: the cases below are refused for their client_id, not their credentials."""
    Application.objects.filter(pk=confusable_client.pk).update(client_id="api-client")
    confusable_client.client_id = "api-client"
    response = _post(live_server, "/o/token/", {"grant_type": "client_credentials"}, confusable_client)
    assert response.status_code == 200, response.text


@pytest.mark.django_db(transaction=True)
def test_a_confusable_client_gets_no_token(live_server, confusable_client):
    _refused(_post(live_server, "/o/token/", {"grant_type": "client_credentials"}, confusable_client))


@pytest.mark.django_db(transaction=True)
def test_a_confusable_client_cannot_exchange(live_server, confusable_client, user_tokens):
    form = {
        "grant_type": GRANT_TYPE,
        "subject_token": user_tokens["access_token"],
        "subject_token_type": ACCESS_TOKEN_TYPE,
    }
    _refused(_post(live_server, "/o/token/", form, confusable_client))


@pytest.mark.django_db(transaction=True)
def test_a_confusable_client_cannot_revoke(live_server, confusable_client, user_tokens):
    response = _post(
        live_server, "/o/revoke_token/", {"token": user_tokens["access_token"]}, confusable_client
    )
    _refused(response)


@pytest.mark.django_db(transaction=True)
def test_a_confusable_client_cannot_introspect(live_server, confusable_client, user_tokens):
    _refused(_post(live_server, "/o/introspect/", {"token": user_tokens["access_token"]}, confusable_client))


@pytest.mark.django_db(transaction=True)
def test_a_confusable_client_cannot_authenticate_with_its_key(live_server, confusable_client):
    key = register_key(confusable_client, "ES256")
    form = {"grant_type": "client_credentials", **assertion_form(assertion(key))}
    _refused(_post(live_server, "/o/token/", form))
