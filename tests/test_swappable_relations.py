"""The package follows DOT's tokens by their forward relations and by names it reads from the
(possibly swapped) models: DOT's own, tests/swapped's renamed ones, or none at all."""

from __future__ import annotations

import pytest
from oauth2_provider.settings import oauth2_settings

from example_project.demo import data
from token_exchange.constants import ID_TOKEN_TYPE
from token_exchange.exceptions import Refusal
from token_exchange.tokens import id_token


@pytest.mark.parametrize("reverse_relation", ["named", "hidden"])
def test_an_id_token_subject_keeps_the_resources_of_its_access_token(
    user_tokens, monkeypatch, reverse_relation
):
    """``hidden``: an access token model whose ``id_token`` has ``related_name="+"``."""
    if reverse_relation == "hidden":
        monkeypatch.setattr(id_token, "_access_token_relation", lambda: None)

    subject = id_token.read_id_token(
        user_tokens["id_token"], ID_TOKEN_TYPE, Refusal, issuer=oauth2_settings.OIDC_ISS_ENDPOINT
    )

    assert subject.resource == (data.AGGREGATES_URI, data.SETTINGS_URI)
    assert set(subject.audience) >= {data.PORTAL_CLIENT_ID, data.AGGREGATES_URI, data.SETTINGS_URI}
