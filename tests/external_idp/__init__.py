"""The partner's OpenID provider (example_project/partner_idp: panva's oidc-provider under
Node.js), for the tests: its client, and a module-scoped fixture that starts one.

The tests obtain real ID tokens and real RFC 9068 JWT access tokens from it, as a partner's
application would, and present them to our token endpoint::

    from tests import external_idp as harness

    external_idp = harness.external_idp  # the module-scoped fixture (an assignment: no F401/F811)

    def test_something(external_idp: harness.ExternalIdP) -> None:
        id_token = external_idp.id_token(sub="alice", email="alice@example.com", email_verified=True)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from example_project.partner_idp import (
    DEFAULT_EXTRA_CLAIMS,
    PARTNER_APP,
    PROFILE_CLAIMS,
    REDIRECT_URI,
    Client,
    ExternalIdP,
    ExternalIdPError,
    new_ec_jwk,
    new_rsa_jwk,
    public_jwk,
)

__all__ = [
    "DEFAULT_EXTRA_CLAIMS",
    "PARTNER_APP",
    "PROFILE_CLAIMS",
    "REDIRECT_URI",
    "Client",
    "ExternalIdP",
    "ExternalIdPError",
    "external_idp",
    "new_ec_jwk",
    "new_rsa_jwk",
    "public_jwk",
]


@pytest.fixture(scope="module")
def external_idp() -> Iterator[ExternalIdP]:
    """A started provider signing with one fresh RSA key (kid ``external-idp-1``), for the module."""
    idp = ExternalIdP.start(keys=[new_rsa_jwk("external-idp-1")])
    try:
        yield idp
    finally:
        idp.stop()
