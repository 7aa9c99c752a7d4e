"""What the guard costs, whatever a request carries, and where it looks.

RFC 6750 §2: a request names one bearer token. The guard looks at each different value once and
at no more than ``MAX_BEARER_VALUES``; a resource server verifies the ``Authorization`` header
only, since nothing there authenticates a token from a URL or a form, so no request makes it ask
the authorization server about a thousand tokens.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.http import HttpResponse
from django.test import Client, RequestFactory
from oauth2_provider.contrib.rest_framework import OAuth2Authentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.test import APIRequestFactory
from rest_framework.views import APIView

from token_exchange.contrib.rest_framework import JWTAccessTokenAuthentication
from token_exchange.impersonation.guard import MAX_BEARER_VALUES, ImpersonationGuardMiddleware

from .test_guard import impersonated, impersonated_body, support_tokens  # noqa: F401 (fixtures)
from .test_resource_server import claims, introspection, issuer, jwks, key, sign  # noqa: F401 (fixtures)

VALIDATOR = "token_exchange.resource_server.IntrospectionValidator"
RESOURCE_SERVER = {"ISSUER": "http://127.0.0.1:8000/o", "RESOURCE_URI": "https://api.example.com/"}


def many_tokens(*, query: int, form: int, same: bool = False, header: str | None = "garbage") -> Any:
    """A POST carrying ``query`` + ``form`` access_token values (and a Bearer header)."""
    value = "x" if same else "q{}"
    qs = "&".join(f"access_token={value.format(i)}" for i in range(query))
    body = "&".join(f"access_token={('x' if same else 'f{}').format(i)}" for i in range(form))
    extra = {"HTTP_AUTHORIZATION": f"Bearer {header}"} if header else {}
    return RequestFactory().post(
        f"/settings/?{qs}", data=body, content_type="application/x-www-form-urlencoded", **extra
    )


def guarded(settings: Any) -> ImpersonationGuardMiddleware:
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "PRIVILEGED_URL_PREFIXES": ("/settings/",)}
    return ImpersonationGuardMiddleware(lambda request: HttpResponse("the view ran"))


def as_resource_server(settings: Any) -> None:
    settings.ROOT_URLCONF = "example_resource_server.urls"  # serves no token endpoint
    settings.OAUTH2_PROVIDER = {**settings.OAUTH2_PROVIDER, "OAUTH2_VALIDATOR_CLASS": VALIDATOR}


@pytest.mark.parametrize("same", [False, True])
def test_a_resource_server_asks_nothing_about_tokens_outside_the_header(introspection, settings, same):  # noqa: F811 (fixtures)
    as_resource_server(settings)
    introspection.answer({"active": False})
    before = len(introspection.posts)

    response = guarded(settings)(many_tokens(query=999, form=999, same=same))

    assert len(introspection.posts) == before  # not one request to the authorization server
    assert response.status_code == 403  # tokens it never verifies count as impersonated


def test_a_resource_server_asks_about_the_header_token_once(introspection, settings):  # noqa: F811 (fixtures)
    as_resource_server(settings)
    introspection.answer({"active": False})
    before = len(introspection.posts)

    response = guarded(settings)(many_tokens(query=0, form=0, header="not-a-token"))

    assert len(introspection.posts) == before + 1
    assert response.status_code == 200  # an invalid token authenticates nobody: not the guard's to refuse


@pytest.mark.django_db
def test_an_authorization_server_looks_at_few_values(settings, django_assert_max_num_queries):
    middleware = guarded(settings)
    with django_assert_max_num_queries(3 * MAX_BEARER_VALUES):
        assert middleware(many_tokens(query=MAX_BEARER_VALUES - 1, form=0)).status_code == 200
    with django_assert_max_num_queries(0):
        assert middleware(many_tokens(query=999, form=999)).status_code == 403
    with django_assert_max_num_queries(3):
        # One value, sent a thousand times, is one value.
        assert middleware(many_tokens(query=999, form=999, same=True, header="x")).status_code == 200


@pytest.mark.django_db
@pytest.mark.parametrize("host", ["testserver", "api.example.com"])
def test_a_site_that_is_both_reads_its_token_tables_on_every_host(settings, impersonated, host):  # noqa: F811 (fixtures)
    """A host routed to a URLconf without the token endpoint is still the authorization
    server's: the AccessToken row DOT authenticated carries act."""
    settings.ROOT_URLCONF = "tests.urls_with_drf"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "api.example.com"]
    settings.MIDDLEWARE = ["tests.urls_api_host.HostURLconf", *settings.MIDDLEWARE]
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "RESOURCE_SERVER": RESOURCE_SERVER}

    response = Client().get("/drf/account/", HTTP_AUTHORIZATION=f"Bearer {impersonated}", HTTP_HOST=host)

    assert response.status_code == 403, response.content


class BothModes(APIView):
    authentication_classes = [OAuth2Authentication, JWTAccessTokenAuthentication]
    permission_classes = [IsAuthenticated]

    def get(self, request: Any) -> Response:
        return Response({"sub": request.user.pk})


@pytest.mark.django_db
@pytest.mark.parametrize("oidc", [True, False])
def test_dots_own_refusal_does_not_stop_a_valid_jwt(jwks, settings, oidc):  # noqa: F811 (fixtures)
    """With DOT's own validator first (a site issuing its own opaque tokens and accepting an
    issuer's JWTs), DOT's "no such row" is no verdict on a JWT: it is verified offline."""
    settings.ROOT_URLCONF = "example_resource_server.urls"
    settings.OAUTH2_PROVIDER = {
        **settings.OAUTH2_PROVIDER,
        "OIDC_ENABLED": oidc,
        "OAUTH2_VALIDATOR_CLASS": "oauth2_provider.oauth2_validators.OAuth2Validator",
    }
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Bearer {sign(claims())}")

    response = BothModes.as_view()(request)

    assert response.status_code == 200, (response.status_code, response.get("WWW-Authenticate"))
