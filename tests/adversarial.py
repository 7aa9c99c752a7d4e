"""The adversarial suite's client and its one assertion.

A case sends a request over real HTTP to the live server, as an attacker's client would, and
asserts the whole outcome: the status, the RFC 6749 §5.2 ``error`` and ``error_description``
(what a probing client could tell two refusals apart by), no token in the body and
nothing secret echoed, not one token row written, and exactly the audit rows expected (a
``token.exchange_refused`` row with its reason once the client is known; none before).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import requests
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from token_exchange.constants import GRANT_TYPE
from token_exchange.models import AuditEvent, ExchangedToken

REFUSED = AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED
TOKEN_FIELDS = ("access_token", "refresh_token", "id_token", "issued_token_type")

# What a client reads, written out rather than imported: a change is a change for clients.
# Every refusal about presented tokens and users (RFC 8693 §2.2.2), whichever token or rule.
TOKEN_REFUSED = "The request was refused."
CLIENT_AUTHENTICATION_FAILED = "Client authentication failed."
SCOPE_REFUSED = "The requested scope is invalid, unknown, or exceeds the scope of the presented tokens."
TARGET_REFUSED = "The requested audience or resource is not within the audience of the presented tokens."


def token_rows() -> dict[str, int]:
    """Row counts of every table a token (or a code) lives in."""
    return {
        model.__name__: model.objects.count()
        for model in (
            get_access_token_model(),
            get_refresh_token_model(),
            get_id_token_model(),
            get_grant_model(),
            ExchangedToken,
        )
    }


def audit_rows_after(last_pk: int) -> list[tuple[str, str | None]]:
    """(event type, refusal reason) of every audit row written after ``last_pk``."""
    rows = AuditEvent.objects.filter(pk__gt=last_pk).order_by("pk")
    return [(row.event_type, row.payload.get("reason")) for row in rows]


def last_audit_pk() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


class OneConnectionPerRequest(requests.Session):
    """On a kept-alive connection the live server's small writes wait for a delayed ACK, 40 ms
    a request; and it closes a connection asked to close without saying so, so one cannot
    simply send ``Connection: close``."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        self.close()
        return response


class TokenClient:
    """A client of the live server's token endpoint, speaking raw HTTP through ``requests``."""

    def __init__(self, base_url: str) -> None:
        self.url = f"{base_url}/o/token/"
        self.session = OneConnectionPerRequest()

    def post(self, data: Any = None, *, auth: tuple[str, str] | None = None, **kwargs: Any) -> Any:
        return self.session.post(self.url, data=data, auth=auth, timeout=30, **kwargs)

    def exchange(self, app: Any, *, auth: tuple[str, str] | None = None, **params: Any) -> Any:
        """A token exchange authenticated with the client's secret (HTTP Basic, RFC 6749 §2.3.1)."""
        return self.post({"grant_type": GRANT_TYPE, **params}, auth=auth or (app.client_id, app.plain_secret))


def refused(
    send: Callable[[], Any],
    *,
    status: int,
    error: str,
    description: str | None,
    reasons: Iterable[str] = (),
    secrets: Iterable[str] = (),
) -> Any:
    """Send the request; assert it was refused and left only the expected audit rows behind.

    ``description``: the exact ``error_description``, or None where the body has none.
    ``reasons``: the ``token.exchange_refused`` rows expected, by reason code, in order; empty
    when the request never gets as far as an authenticated client (nothing to attribute it to).
    ``secrets``: strings (tokens, secrets) the response must not contain.
    """
    rows_before = token_rows()
    audit_before = last_audit_pk()

    response = send()

    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["Content-Type"] == "application/json", response.headers
    assert response.headers.get("Cache-Control") == "no-store"
    body = response.json()
    assert body["error"] == error, body
    assert body.get("error_description") == description, body
    assert not set(TOKEN_FIELDS) & body.keys(), body
    for secret in secrets:
        assert secret not in response.text
    assert token_rows() == rows_before
    assert audit_rows_after(audit_before) == [(REFUSED, reason) for reason in reasons]
    return response
