"""Impersonated tokens stay out of privileged places: DRF permission, decorator, middleware."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client, override_settings
from django.urls import get_script_prefix, reverse, set_script_prefix

from token_exchange.constants import ACCESS_TOKEN_TYPE, USER_ID_TYPE
from token_exchange.impersonation.guard import privileged_prefixes

pytestmark = pytest.mark.django_db
ISSUER = "http://127.0.0.1:8000/o"


@pytest.fixture
def support_tokens(login, support) -> dict[str, Any]:
    """Not restricted to resource indicators, so DOT accepts them at any URL of this site."""
    return login(support, resources=())


@pytest.fixture
def user_tokens(login, end_user_in_acme) -> dict[str, Any]:
    return login(end_user_in_acme, resources=())


@pytest.fixture
def impersonated_body(token_endpoint, portal, impersonation_allowed, support_tokens, end_user_in_acme):
    response = token_endpoint.exchange(
        portal,
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        scope="openid read",
    )
    assert response.status_code == 200, response.content
    return response.json()


@pytest.fixture
def impersonated(impersonated_body) -> str:
    return str(impersonated_body["access_token"])


# DOT's OAuth2TokenMiddleware logs bearer tokens in, so an impersonated token of a staff user
# would open the admin; the guard comes first (DOT's middleware 500s on some odd headers).
bearer_login = override_settings(
    AUTHENTICATION_BACKENDS=[
        "oauth2_provider.backends.OAuth2Backend",
        "django.contrib.auth.backends.ModelBackend",
    ],
    MIDDLEWARE=[
        "django.contrib.sessions.middleware.SessionMiddleware",
        "token_exchange.impersonation.guard.ImpersonationGuardMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "oauth2_provider.middleware.OAuth2TokenMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
    ],
)


def get(path: str, token: str) -> Any:
    return Client().get(path, HTTP_AUTHORIZATION=f"Bearer {token}")


@override_settings(ROOT_URLCONF="tests.urls_with_drf")
def test_drf_permission_refuses_impersonated_tokens(impersonated, user_tokens, end_user_in_acme):
    refused = get("/drf/account/", impersonated)
    assert refused.status_code == 403
    assert refused.json()["detail"] == "Impersonated tokens cannot be used here."
    assert get("/drf/account/", user_tokens["access_token"]).status_code == 200


@override_settings(ROOT_URLCONF="tests.urls_with_drf")
def test_drf_views_can_read_the_actor(impersonated, user_tokens, support, end_user_in_acme):
    body = get("/drf/orders/", impersonated).json()
    assert body == {"sub": str(end_user_in_acme.pk), "act": {"iss": ISSUER, "sub": str(support.pk)}}
    assert get("/drf/orders/", user_tokens["access_token"]).json()["act"] is None


def test_decorated_view_refuses_impersonated_tokens(
    token_endpoint, portal, login, impersonation_allowed, support, end_user_in_acme
):
    actor = login(support)["access_token"]  # with the demo's resource indicators for both APIs
    customer = login(end_user_in_acme)["access_token"]
    impersonated = token_endpoint.exchange(
        portal,
        subject_token=customer,
        subject_token_type=ACCESS_TOKEN_TYPE,
        actor_token=actor,
        actor_token_type=ACCESS_TOKEN_TYPE,
    ).json()["access_token"]
    assert get("/api/settings/", impersonated).status_code == 403
    assert get("/api/settings/", impersonated).json()["error"] == "access_denied"
    assert get("/api/aggregates/", impersonated).status_code == 200
    assert get("/api/settings/", customer).status_code == 200


@pytest.fixture
def staff_member(django_user_model) -> Any:
    return django_user_model.objects.create_superuser("staff", "staff@example.com", "pw")


@pytest.fixture
def impersonated_staff(token_endpoint, portal, login, impersonation_allowed, django_user_model, staff_member):
    """An instance admin impersonator's tokens for a staff superuser, unrestricted by resource."""
    from token_exchange.models import ImpersonatorGrant

    root = django_user_model.objects.create_superuser("root", "root@example.com", "pw")
    ImpersonatorGrant.objects.create(user=root, role=ImpersonatorGrant.Role.ADMIN_IMPERSONATOR)
    response = token_endpoint.exchange(
        portal,
        subject_token=str(staff_member.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=login(root, resources=())["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        scope="openid",
    )
    assert response.status_code == 200, response.content
    return response.json()


@bearer_login
def test_middleware_keeps_impersonated_tokens_out_of_the_admin(login, staff_member, impersonated_staff):
    """With DOT's OAuth2TokenMiddleware a bearer token logs in; an impersonated one must not."""
    own = login(staff_member, resources=())["access_token"]
    assert get("/admin/", own).status_code == 200  # the staff user's own token opens the admin

    impersonated = impersonated_staff["access_token"]
    assert get("/admin/", impersonated).status_code == 403
    assert get("/admin/auth/user/", impersonated).status_code == 403
    # Elsewhere the middleware stays out of the way (the API then checks the audience itself).
    assert get("/api/aggregates/", impersonated).json()["error"] != "access_denied"


@override_settings(TOKEN_EXCHANGE={"PRIVILEGED_URL_PREFIXES": ["/drf/"]}, ROOT_URLCONF="tests.urls_with_drf")
def test_privileged_prefixes_are_a_setting(impersonated):
    assert get("/drf/orders/", impersonated).status_code == 403


@bearer_login
@pytest.mark.parametrize("prefixes", [None, ["/admin/"]])
def test_a_site_served_under_a_script_name_is_guarded_alike(impersonated_staff, prefixes):
    """Behind a proxy at /app/ the admin's path is /app/admin/; prefixes are the site's own paths
    (below the script name), as in urls.py, and the default follows the admin wherever it is."""
    with override_settings(TOKEN_EXCHANGE={"PRIVILEGED_URL_PREFIXES": prefixes}, FORCE_SCRIPT_NAME="/app"):
        response = Client().get(
            "/admin/", SCRIPT_NAME="/app", HTTP_AUTHORIZATION=f"Bearer {impersonated_staff['access_token']}"
        )
    assert response.wsgi_request.path == "/app/admin/"
    assert response.status_code == 403


def test_the_default_prefix_is_the_admins_below_the_script_name(db):
    """A WSGI server sets the script prefix, so reverse() includes it; the guard takes it off."""
    previous = get_script_prefix()
    set_script_prefix("/app/")
    try:
        assert reverse("admin:index") == "/app/admin/"
        assert privileged_prefixes() == ("/admin/",)
    finally:
        set_script_prefix(previous)


# The guard looks where DOT and oauthlib look, and fails closed.


@override_settings(ROOT_URLCONF="tests.urls_with_drf")
def test_an_impersonated_id_token_as_bearer_is_refused(impersonated_body, user_tokens):
    """DOT accepts ID tokens as bearer tokens when OpenID Connect is on."""
    id_token = impersonated_body["id_token"]
    assert get("/drf/account/", id_token).status_code == 403
    assert get("/drf/orders/", user_tokens["id_token"]).status_code == 200  # a customer's own ID token


@pytest.mark.parametrize("where", ["query", "form", "tab"])
def test_every_bearer_transport_is_checked(impersonated, where):
    client = Client()
    if where == "query":
        response = client.get("/api/settings/", {"access_token": impersonated})
    elif where == "form":
        response = client.post("/api/settings/", {"access_token": impersonated})
    else:
        response = client.get("/api/settings/", HTTP_AUTHORIZATION=f"Bearer\t{impersonated}")
    assert response.status_code == 403
    assert response.json()["error"] == "access_denied"


@bearer_login
def test_middleware_refuses_impersonated_id_tokens_and_odd_transports(impersonated_staff):
    body = impersonated_staff
    assert get("/admin/", body["id_token"]).status_code == 403
    assert Client().get("/admin/", HTTP_AUTHORIZATION=f"Bearer\t{body['access_token']}").status_code == 403
    assert Client().get("/admin/", {"access_token": body["access_token"]}).status_code == 403
