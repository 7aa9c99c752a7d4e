"""Throttling refused exchanges (issue 17, section 9), over HTTP.

After ``THROTTLE_REFUSALS`` refused exchanges of one client within a window, every further token
exchange request of that client is answered ``429 temporarily_unavailable`` with ``Retry-After``
until the window ends, and one ``token.exchange_throttled`` row says so. Only an authenticated
client is counted; other clients, well-behaved ones and a cache that is down are unaffected.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.core.cache.backends.base import BaseCache

from token_exchange import throttle
from token_exchange.constants import ACCESS_TOKEN_TYPE
from token_exchange.models import AuditEvent

from .adversarial import TOKEN_REFUSED, TokenClient, audit_rows_after, last_audit_pk, token_rows
from .conftest import make_app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.adversarial]

THROTTLED = AuditEvent.EventType.TOKEN_EXCHANGE_THROTTLED
REFUSED = AuditEvent.EventType.TOKEN_EXCHANGE_REFUSED
LIMIT = 3
WINDOW = 60


class Clock:
    """The throttle's clock, moved by hand: a window passes without waiting for it."""

    def __init__(self) -> None:
        self.now = 1_000_000 * WINDOW + 15.0  # 15 s into a window: 45 s left

    def __call__(self) -> float:
        return self.now


class BrokenCache(BaseCache):
    """A cache server that is down: every call fails, as a Redis client does."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)

    def _down(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("cache is down")

    add = get = set = incr = delete = touch = has_key = clear = _down


@pytest.fixture
def http(live_server: Any) -> TokenClient:
    return TokenClient(live_server.url)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(throttle, "_now", fake)
    return fake


@pytest.fixture
def limited(settings: Any, clock: Clock) -> None:
    settings.TOKEN_EXCHANGE = {
        **settings.TOKEN_EXCHANGE,
        "THROTTLE_REFUSALS": LIMIT,
        "THROTTLE_WINDOW_SECONDS": WINDOW,
    }


def garbage(http: TokenClient, app: Any) -> Any:
    return http.exchange(app, subject_token="garbage", subject_token_type=ACCESS_TOKEN_TYPE)


def good(http: TokenClient, app: Any, tokens: dict[str, Any]) -> Any:
    return http.exchange(app, subject_token=tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE)


def refuse(http: TokenClient, app: Any, times: int) -> None:
    """``times`` ordinary refusals (the last may cross the limit: its audit rows are checked apart)."""
    for _ in range(times):
        response = garbage(http, app)
        assert response.status_code == 400, response.text
        assert response.json() == {"error": "invalid_request", "error_description": TOKEN_REFUSED}


def assert_throttled(response: Any, retry_after: int = 45) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["Retry-After"] == str(retry_after)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.json() == {
        "error": "temporarily_unavailable",
        "error_description": "Too many refused requests from this client; retry later.",
    }


def test_past_the_limit_the_client_gets_429_and_one_audit_row(http, portal, user_tokens, limited):
    before = last_audit_pk()
    refuse(http, portal, LIMIT)
    rows = token_rows()
    throttled_at = last_audit_pk()

    assert_throttled(garbage(http, portal))
    # Even a request that would be issued waits for the window to end; nothing is written.
    assert_throttled(good(http, portal, user_tokens))
    assert_throttled(garbage(http, portal))
    assert token_rows() == rows
    assert audit_rows_after(throttled_at) == []
    assert audit_rows_after(before) == [*[(REFUSED, "unknown_token")] * LIMIT, (THROTTLED, None)]
    row = AuditEvent.objects.get(event_type=THROTTLED)
    assert row.application.client_id == "portal"
    assert (row.payload["refusals"], row.payload["window_seconds"]) == (LIMIT, WINDOW)


def test_a_well_behaved_client_is_never_throttled(http, portal, user_tokens, limited, clock):
    for _ in range(3):
        refuse(http, portal, LIMIT - 1)
        for _ in range(4):
            assert good(http, portal, user_tokens).status_code == 200
        clock.now += WINDOW
    assert not AuditEvent.objects.filter(event_type=THROTTLED).exists()


def test_another_client_is_not_affected(http, portal, user_tokens, limited):
    other = make_app("other")
    refuse(http, portal, LIMIT)
    assert_throttled(garbage(http, portal))
    refuse(http, other, LIMIT)
    assert_throttled(garbage(http, other))
    assert AuditEvent.objects.filter(event_type=THROTTLED).count() == 2


def test_the_next_window_lets_the_client_in_again(http, portal, user_tokens, limited, clock):
    refuse(http, portal, LIMIT)
    clock.now += 40
    assert_throttled(garbage(http, portal), retry_after=5)
    clock.now += 5
    assert good(http, portal, user_tokens).status_code == 200
    # A new window counts afresh, and is audited once more when crossed.
    refuse(http, portal, LIMIT)
    assert_throttled(garbage(http, portal), retry_after=60)
    assert AuditEvent.objects.filter(event_type=THROTTLED).count() == 2


def test_strangers_cannot_lock_a_client_out(http, portal, user_tokens, limited):
    """Failed client authentication is nobody's refusal: not counted, not audited."""
    before = last_audit_pk()
    for secret in ["wrong", "", "portal-secret "] * 3:
        response = http.post(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": "garbage",
                "subject_token_type": ACCESS_TOKEN_TYPE,
            },
            auth=("portal", secret),
        )
        assert response.status_code == 401
    assert audit_rows_after(before) == []
    assert good(http, portal, user_tokens).status_code == 200


def test_zero_turns_the_throttle_off(http, portal, user_tokens, settings, clock):
    settings.TOKEN_EXCHANGE = {**settings.TOKEN_EXCHANGE, "THROTTLE_REFUSALS": 0}
    refuse(http, portal, 5)
    assert good(http, portal, user_tokens).status_code == 200


@pytest.mark.parametrize("cache", ["missing alias", "cache down"])
def test_a_cache_outage_fails_open(http, portal, user_tokens, settings, clock, caplog, cache):
    settings.CACHES = {
        **settings.CACHES,
        "throttle": {"BACKEND": f"{__name__}.BrokenCache"},
    }
    settings.TOKEN_EXCHANGE = {
        **settings.TOKEN_EXCHANGE,
        "THROTTLE_REFUSALS": 1,
        "THROTTLE_CACHE": "nowhere" if cache == "missing alias" else "throttle",
    }
    refuse(http, portal, 3)
    assert good(http, portal, user_tokens).status_code == 200
    unanswered = [
        record for record in caplog.records if "The throttle cache did not answer" in record.message
    ]
    assert unanswered
    # One line naming the error's type, never a traceback on every request of an outage.
    assert all(record.exc_info is None for record in unanswered)
    assert {record.message.split("(")[1].split(")")[0] for record in unanswered} <= {
        "ConnectionError",
        "InvalidCacheBackendError",
    }
