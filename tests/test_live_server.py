"""The guide's walkthrough over real HTTP against a live server, as curl would do it."""

from __future__ import annotations

import pytest
import requests

from example_project.demo import data
from token_exchange.constants import ACCESS_TOKEN_TYPE, GRANT_TYPE, ID_TOKEN_TYPE, JWT_TYPE

from .jwt_helpers import verify

pytestmark = pytest.mark.django_db(transaction=True)


def test_walkthrough_over_http(live_server, portal, aggregates, user_tokens, end_user):
    auth = ("portal", portal.plain_secret)
    token_url = f"{live_server.url}/o/token/"

    def exchange(**params):
        return requests.post(token_url, data={"grant_type": GRANT_TYPE, **params}, auth=auth, timeout=10)

    narrowed = exchange(
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        scope="openid",
        audience=data.AGGREGATES_URI,
    )
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.headers["Cache-Control"] == "no-store"
    bearer = {"Authorization": f"Bearer {narrowed.json()['access_token']}"}
    assert requests.get(f"{live_server.url}/api/aggregates/", headers=bearer, timeout=10).status_code == 200
    assert requests.get(f"{live_server.url}/api/settings/", headers=bearer, timeout=10).status_code == 403
    introspection = requests.post(
        f"{live_server.url}/o/introspect/",
        data={"token": narrowed.json()["access_token"]},
        auth=("aggregates", aggregates.plain_secret),
        timeout=10,
    ).json()
    assert introspection["aud"] == [data.AGGREGATES_URI]

    jwt = exchange(
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=JWT_TYPE,
        scope="openid offline_access read",
    ).json()
    assert verify(jwt["access_token"])[1]["sub"] == str(end_user.pk)

    id_token = exchange(
        subject_token=jwt["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        requested_token_type=ID_TOKEN_TYPE,
    ).json()
    assert id_token["token_type"] == "N_A"

    from_id_token = exchange(subject_token=user_tokens["id_token"], subject_token_type=ID_TOKEN_TYPE)
    assert from_id_token.status_code == 200, from_id_token.text

    refreshed = requests.post(
        token_url,
        data={"grant_type": "refresh_token", "refresh_token": jwt["refresh_token"]},
        auth=auth,
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text

    refused = exchange(subject_token="forged", subject_token_type=ACCESS_TOKEN_TYPE)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_request"
