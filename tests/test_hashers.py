"""The client secret hasher: what DOT stores, what it accepts, and what it never reveals."""

from __future__ import annotations

import pytest
from django.contrib.auth.hashers import check_password, identify_hasher, make_password

from token_exchange.hashers import ClientSecretHasher

from .conftest import make_app


def test_a_secret_is_stored_salted_and_checked_in_constant_form():
    hasher = ClientSecretHasher()
    first = hasher.encode("s3cret", hasher.salt())
    second = hasher.encode("s3cret", hasher.salt())
    assert first.startswith("token_exchange_sha256$")
    assert first != second  # salted: equal secrets do not give equal hashes
    assert "s3cret" not in first
    assert hasher.verify("s3cret", first)
    assert not hasher.verify("s3cret ", first)
    assert not hasher.verify("", first)
    summary = hasher.safe_summary(first)
    assert summary["algorithm"] == "token_exchange_sha256"
    assert first.split("$")[2] not in str(summary)


@pytest.mark.parametrize("salt", ["", "with$dollar"])
def test_a_salt_that_would_break_the_format_is_refused(salt):
    with pytest.raises(ValueError):
        ClientSecretHasher().encode("s3cret", salt)


def test_django_finds_it_by_its_prefix():
    encoded = make_password("s3cret", hasher="token_exchange_sha256")
    assert isinstance(identify_hasher(encoded), ClientSecretHasher)
    assert check_password("s3cret", encoded)
    assert not check_password("other", encoded)


@pytest.mark.django_db
def test_dot_stores_client_secrets_with_it_and_clients_authenticate(token_endpoint):
    """The example project's CLIENT_SECRET_HASHER: DOT hashes a new client's secret with it."""
    app = make_app("hashed", authorization_grant_type="client-credentials")
    app.refresh_from_db()
    assert app.client_secret.startswith("token_exchange_sha256$")
    ok = token_endpoint.post({"grant_type": "client_credentials"}, auth=("hashed", app.plain_secret))
    assert ok.status_code == 200
    wrong = token_endpoint.post({"grant_type": "client_credentials"}, auth=("hashed", "hashed-secreT"))
    assert wrong.status_code == 401
