"""Many processes, one truth: the example served as a deployment serves it, over HTTP.

Three gunicorn servers of one worker each (``tests/scale_out.py``), each with its own persistent
PostgreSQL connection, sharing the test database and a Redis database of the suite's own. Every
request names the process that serves it, and what one process learns (a used ``jti``, a
refusal, a switch turned off, a Stop) must hold in the others at the next request.

``make test`` runs this module in its own PostgreSQL run (``make test-scale-out``); on SQLite, or
without Redis, it is skipped (``REQUIRE_REDIS=1``: Redis must answer).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.contrib.auth.models import Permission
from oauth2_provider.models import get_access_token_model, get_id_token_model, get_refresh_token_model

from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    JWT_TYPE,
    REFRESH_TOKEN_TYPE,
    USER_ID_TYPE,
)
from token_exchange.models import AuditEvent, ClientPolicy, ExchangedToken, ImpersonationSession

from . import proof
from .client_jwt import assertion, assertion_form, register_key, sign, subject_claims
from .conftest import make_app
from .scale_out import (
    REDIS_URL,
    Server,
    database_url,
    json_of,
    redis_answers,
    redis_client,
    rss_kib,
    servers,
    spread,
)

AccessToken = get_access_token_model()
RefreshToken = get_refresh_token_model()
IDToken = get_id_token_model()
EventType = AuditEvent.EventType


def _skip_reason() -> str | None:
    from django.db import connections, router

    if connections[router.db_for_write(AuditEvent)].vendor != "postgresql":
        return "several server processes share one database: PostgreSQL (make test-scale-out)"
    if not redis_answers(REDIS_URL):
        if os.environ.get("REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {REDIS_URL} does not answer, and REQUIRE_REDIS=1")
        return f"Redis at {REDIS_URL} does not answer"
    return None


pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.scale_out]

PARALLEL = 20
SPA_URL = "http://127.0.0.1:8000/portal/"


@pytest.fixture
def fleet(transactional_db: None, tmp_path: Path) -> Iterator[list[Server]]:
    """Three servers started for each test: between tests the database is emptied, which no
    deployment does, and a process would keep what it cached of it (content type ids)."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    database = database_url(AuditEvent)
    directory = tmp_path
    with servers(3, database=database, redis_url=REDIS_URL, directory=directory) as started:
        yield started
        errors = {server.name: server.server_errors() for server in started}
    assert not any(errors.values()), errors


@pytest.fixture(autouse=True)
def shared_cache(fleet: list[Server]) -> Iterator[Any]:
    """The servers' Redis database, empty at the start of each test."""
    client = redis_client()
    client.flushdb()
    yield client
    client.close()


def exchange_form(**params: Any) -> dict[str, Any]:
    return {"grant_type": GRANT_TYPE, **params}


def events(event_type: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(event_type=event_type).order_by("pk"))


def statuses(results: list[tuple[int, dict[str, Any]]]) -> Counter[tuple[int, str | None]]:
    return Counter((status, body.get("error")) for status, body in results)


def post(server: Server, path: str, form: dict[str, Any], auth: Any = None) -> requests.Response:
    return requests.post(f"{server.url}{path}", data=form, auth=auth, timeout=60)


def sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


# -- one-time JWTs -------------------------------------------------------------------------------


def test_one_client_assertion_sent_twenty_times_over_three_processes_authenticates_once(
    fleet, shared_cache, portal, user_tokens
):
    key = register_key(portal)
    form = exchange_form(
        subject_token=user_tokens["access_token"],
        subject_token_type=ACCESS_TOKEN_TYPE,
        **assertion_form(assertion(key)),
    )

    results = spread(PARALLEL, lambda index: post(fleet[index % len(fleet)], "/o/token/", form))
    proof.count("scale-out: parallel requests", PARALLEL)

    assert statuses(results) == {(200, None): 1, (401, "invalid_client"): PARALLEL - 1}
    assert len(events(EventType.TOKEN_EXCHANGED)) == 1
    assert not events(EventType.TOKEN_EXCHANGE_REFUSED)  # nobody was authenticated
    # The one jti, kept in the Redis every process shares.
    assert len(shared_cache.keys("replay:*")) == 1


def test_one_self_signed_subject_jwt_sent_twenty_times_over_three_processes_is_used_once(
    fleet, shared_cache, portal, impersonation_allowed, support_tokens, end_user_in_acme
):
    key = register_key(portal)
    form = exchange_form(
        subject_token=sign(key, subject_claims(portal.client_id, end_user_in_acme)),
        subject_token_type=JWT_TYPE,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
    )
    auth = (portal.client_id, portal.plain_secret)

    results = spread(PARALLEL, lambda index: post(fleet[index % len(fleet)], "/o/token/", form, auth))
    proof.count("scale-out: parallel requests", PARALLEL)

    assert statuses(results) == {(200, None): 1, (400, "invalid_request"): PARALLEL - 1}
    [impersonated] = events(EventType.USER_IMPERSONATED)
    [exchanged] = events(EventType.TOKEN_EXCHANGED)
    assert exchanged.payload["tokens"] == impersonated.payload["tokens"]
    reasons = [row.payload["reason"] for row in events(EventType.TOKEN_EXCHANGE_REFUSED)]
    assert reasons == ["replayed_jti"] * (PARALLEL - 1)
    assert ExchangedToken.objects.count() == len(impersonated.payload["tokens"])
    assert len(shared_cache.keys("replay:*")) == 1


# -- the refusal throttle ------------------------------------------------------------------------


def _whole_window_left(seconds: int, needed: float) -> None:
    """Wait for the next throttle window when this one ends in less than ``needed`` seconds."""
    left = seconds - time.time() % seconds
    if left < needed:
        time.sleep(left + 0.2)


def test_the_refusal_throttle_counts_refusals_of_every_process(fleet, portal):
    """THROTTLE_REFUSALS (100 by default) refusals in one window, spread over the processes:
    then every process answers 429, and one row says the client was throttled."""
    from token_exchange.conf import token_exchange_settings

    limit = token_exchange_settings.THROTTLE_REFUSALS
    window = token_exchange_settings.THROTTLE_WINDOW_SECONDS
    auth = (portal.client_id, portal.plain_secret)
    form = exchange_form(subject_token="no-such-token", subject_token_type=ACCESS_TOKEN_TYPE)
    _whole_window_left(window, needed=15)

    results: list[int] = []
    lock = threading.Lock()

    def refuse(server_index: int) -> None:
        with requests.Session() as session:
            for _ in range(limit // 10):
                status = session.post(
                    f"{fleet[server_index % 3].url}/o/token/", data=form, auth=auth, timeout=60
                )
                with lock:
                    results.append(status.status_code)

    threads = [threading.Thread(target=refuse, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(results) == {400: limit}

    after = [post(server, "/o/token/", form, auth) for server in fleet]
    assert [(answer.status_code, json_of(answer)["error"]) for answer in after] == [
        (429, "temporarily_unavailable")
    ] * len(fleet)
    assert all(0 < int(answer.headers["Retry-After"]) <= window for answer in after)
    assert len(events(EventType.TOKEN_EXCHANGE_REFUSED)) == limit
    assert len(events(EventType.TOKEN_EXCHANGE_THROTTLED)) == 1
    proof.count("scale-out: refusals counted across processes", limit)


# -- the security switches, through the admin of one process -------------------------------------


class Browser:
    """A person's browser: one cookie jar, whichever server the load balancer picks."""

    def __init__(self) -> None:
        self.session = requests.Session()

    def csrf(self) -> str:
        return str(self.session.cookies.get("csrftoken"))

    def sign_in(self, server: Server, username: str, password: str) -> None:
        self.session.get(f"{server.url}/admin/login/", timeout=30)
        answer = self.session.post(
            f"{server.url}/admin/login/?next=/admin/",
            data={
                "username": username,
                "password": password,
                "next": "/admin/",
                "csrfmiddlewaretoken": self.csrf(),
            },
            allow_redirects=False,
            timeout=30,
        )
        assert answer.status_code == 302, answer.text[:500]

    def post(self, server: Server, path: str, form: dict[str, Any]) -> requests.Response:
        return self.session.post(
            f"{server.url}{path}",
            data={**form, "csrfmiddlewaretoken": self.csrf()},
            allow_redirects=False,
            timeout=30,
        )

    def get(self, server: Server, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(f"{server.url}{path}", allow_redirects=False, timeout=30, **kwargs)


def set_served_password(user: Any, raw: str) -> None:
    """The suite hashes passwords with MD5 (tests/conftest.py); the servers know only the
    example's hashers, so a user who signs in at a server gets a PBKDF2 one."""
    hasher = PBKDF2PasswordHasher()
    user.password = hasher.encode(raw, hasher.salt())
    user.save(update_fields=["password"])


@pytest.fixture
def admin_browser(fleet: list[Server], django_user_model: Any) -> Browser:
    root = django_user_model.objects.create_superuser("root", "root@example.com")
    set_served_password(root, "root-password")
    browser = Browser()
    browser.sign_in(fleet[0], "root", "root-password")
    return browser


def switch(browser: Browser, server: Server, **switches: bool) -> None:
    """Save the Security settings page with the switches given (unchecked boxes are not sent)."""
    page = browser.get(server, "/admin/token_exchange/securitysettings/")
    assert page.status_code == 302
    path = page.headers["Location"]
    form = {name: "on" for name, value in switches.items() if value}
    saved = browser.post(server, path, {**form, "_save": "Save"})
    assert saved.status_code == 302, saved.text[:500]


def test_allow_impersonation_turned_off_in_one_process_refuses_the_next_request_in_every_other(
    fleet, admin_browser, portal, impersonation_allowed, support, support_tokens, end_user_in_acme
):
    form = exchange_form(
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
    )
    auth = (portal.client_id, portal.plain_secret)
    first, *others = fleet
    assert [post(server, "/o/token/", form, auth).status_code for server in others] == [200, 200]

    switch(admin_browser, first, token_exchange_enabled=True, allow_impersonation=False)

    answers = [post(server, "/o/token/", form, auth) for server in others]
    assert [(answer.status_code, json_of(answer)["error"]) for answer in answers] == [
        (400, "invalid_request")
    ] * 2
    assert [row.payload["reason"] for row in events(EventType.TOKEN_EXCHANGE_REFUSED)] == [
        "impersonation_disabled"
    ] * 2
    [changed] = events(EventType.SECURITY_SETTINGS_CHANGED)
    assert changed.actor.username == "root"
    assert len(events(EventType.USER_IMPERSONATED)) == 2


def test_token_exchange_turned_off_in_one_process_refuses_the_next_request_in_every_other(
    fleet, admin_browser, portal, user_tokens
):
    form = exchange_form(subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE)
    auth = (portal.client_id, portal.plain_secret)
    first, *others = fleet
    assert [post(server, "/o/token/", form, auth).status_code for server in others] == [200, 200]

    switch(admin_browser, first, token_exchange_enabled=False)

    answers = [post(server, "/o/token/", form, auth) for server in others]
    assert [(answer.status_code, json_of(answer)["error"]) for answer in answers] == [
        (400, "unsupported_grant_type")
    ] * 2
    assert len(events(EventType.TOKEN_EXCHANGED)) == 2

    switch(admin_browser, others[0], token_exchange_enabled=True)
    assert post(first, "/o/token/", form, auth).status_code == 200


# -- Stop of an admin-started impersonation ------------------------------------------------------


def test_stop_in_one_process_ends_the_impersonation_for_requests_served_by_the_others(
    fleet, support, end_user_in_acme, impersonation_allowed, aggregates
):
    """Support starts impersonating from the admin of one server, the customer's sign-in at the
    backend goes through two others, Stop goes back to the first: the others then refuse every
    token of it, at the token endpoint and at introspection."""
    a, b, c = fleet
    support.is_staff = True
    support.save()
    set_served_password(support, "pw")
    support.user_permissions.add(Permission.objects.get(codename="view_user"))
    backend = make_app("backend", redirect_uris=SPA_URL)
    ClientPolicy.objects.filter(application=backend).update(
        admin_impersonation_enabled=True,
        launch_url=SPA_URL,
        admin_impersonation_scope="openid profile email offline_access",
    )
    browser = Browser()
    browser.sign_in(a, "support", "pw")
    started = browser.post(
        a,
        f"/admin/auth/user/{end_user_in_acme.pk}/impersonate/",
        {"application": backend.pk, "reason": "Ticket #4711", "minutes": 15},
    )
    assert started.status_code == 302, started.text[:500]
    assert started.headers["Location"].startswith(SPA_URL)

    # The backend's sign-in, as the browser and the backend do it, through the other servers.
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = {
        "response_type": "code",
        "client_id": backend.client_id,
        "redirect_uri": SPA_URL,
        "scope": "openid profile offline_access",
        "state": "s1",
        "nonce": "n1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    authorized = browser.get(b, "/o/authorize/?" + urlencode(query))
    assert authorized.status_code == 302, authorized.text[:500]
    code = parse_qs(urlsplit(authorized.headers["Location"]).query)["code"][0]
    backend_auth = (backend.client_id, backend.plain_secret)
    redeemed = post(
        c,
        "/o/token/",
        {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": SPA_URL,
            "code_verifier": verifier,
        },
        backend_auth,
    )
    assert redeemed.status_code == 200, redeemed.text
    tokens = redeemed.json()
    derived = post(
        b,
        "/o/token/",
        exchange_form(subject_token=tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE),
        backend_auth,
    )
    assert derived.status_code == 200, derived.text
    session = ImpersonationSession.objects.get()
    assert session.ended_at is None

    stopped = browser.post(a, "/o/impersonation/stop/", {})
    assert stopped.status_code == 302

    for server in (b, c):
        exchanged = post(
            server,
            "/o/token/",
            exchange_form(subject_token=derived.json()["access_token"], subject_token_type=ACCESS_TOKEN_TYPE),
            backend_auth,
        )
        assert (exchanged.status_code, json_of(exchanged)["error"]) == (400, "invalid_request")
        refreshed = post(
            server,
            "/o/token/",
            {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
            backend_auth,
        )
        assert (refreshed.status_code, json_of(refreshed)["error"]) == (400, "invalid_grant")
        for token in (tokens["access_token"], derived.json()["access_token"]):
            introspected = post(
                server, "/o/introspect/", {"token": token}, (aggregates.client_id, aggregates.plain_secret)
            )
            assert (introspected.status_code, introspected.json()) == (200, {"active": False})
    session.refresh_from_db()
    assert session.ended_at is not None
    under = {"exchanged__impersonation": session}
    assert not AccessToken.objects.filter(**under).exists()
    assert not RefreshToken.objects.filter(revoked__isnull=True, **under).exists()
    assert not IDToken.objects.filter(**under).exists()
    [ended] = events(EventType.IMPERSONATION_ENDED)
    assert ended.actor == support


# -- a minute of mixed load ----------------------------------------------------------------------

LOAD_SECONDS = float(os.environ.get("SCALE_OUT_LOAD_SECONDS", "60"))
CLIENTS = 6


def test_a_minute_of_mixed_load_over_three_processes(
    fleet, shared_cache, portal, impersonation_allowed, support_tokens, user_tokens, end_user_in_acme
):
    """Clients exchange, impersonate, refresh and revoke for a minute, each request to a server
    picked at random. No answer is a 5xx or anything unexpected, audit rows equal tokens issued,
    and no worker's memory grows once it is warm."""
    auth = (portal.client_id, portal.plain_secret)
    plain = exchange_form(
        subject_token=user_tokens["access_token"], subject_token_type=ACCESS_TOKEN_TYPE, scope="openid read"
    )
    impersonate = exchange_form(
        subject_token=str(end_user_in_acme.pk),
        subject_token_type=USER_ID_TYPE,
        actor_token=support_tokens["access_token"],
        actor_token_type=ACCESS_TOKEN_TYPE,
        scope="openid offline_access read",
    )
    key = register_key(portal)
    kinds: Counter[str] = Counter()
    token_counts: Counter[str] = Counter()
    revoked: list[str] = []
    unexpected: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + LOAD_SECONDS
    warm_at = time.monotonic() + min(15.0, LOAD_SECONDS / 4)
    warm_rss: dict[int, int] = {}

    crashed: list[BaseException] = []

    def client(seed: int) -> None:
        try:
            run_client(seed)
        except BaseException as exc:  # a client that stops early would make the load lighter
            crashed.append(exc)
            raise

    def run_client(seed: int) -> None:
        pick = random.Random(seed)
        refresh_token: str | None = None
        with requests.Session() as http:

            def send(
                kind: str, path: str, form: dict[str, Any], expected: int = 200
            ) -> dict[str, Any] | None:
                server = pick.choice(fleet)
                signed = "client_assertion" in form
                answer = http.post(
                    f"{server.url}{path}", data=form, auth=None if signed else auth, timeout=60
                )
                with lock:
                    if answer.status_code != expected:
                        unexpected.append((kind, answer.status_code, answer.text[:200]))
                        return None
                    kinds[kind] += 1
                    body: dict[str, Any] = answer.json() if answer.content else {}
                    token_counts.update(
                        name for name in ("access_token", "refresh_token", "id_token") if name in body
                    )
                    if kind == "revocation":
                        revoked.append(form["token"])
                return body

            while time.monotonic() < stop_at:
                roll = pick.random()
                if seed == 0:  # a backend that signs a new client assertion for every request
                    send("exchange by assertion", "/o/token/", {**plain, **assertion_form(assertion(key))})
                elif roll < 0.4:
                    issued = send("exchange", "/o/token/", plain)
                    if issued and pick.random() < 0.5:
                        send("revocation", "/o/revoke_token/", {"token": issued["access_token"]})
                elif roll < 0.7 or refresh_token is None:
                    issued = send("impersonation", "/o/token/", impersonate)
                    refresh_token = issued["refresh_token"] if issued else None
                else:
                    issued = send(
                        "refresh",
                        "/o/token/",
                        {"grant_type": "refresh_token", "refresh_token": refresh_token},
                    )
                    refresh_token = issued["refresh_token"] if issued else None

    def sample_when_warm() -> None:
        time.sleep(max(0.0, warm_at - time.monotonic()))
        for server in fleet:
            for pid in server.worker_pids():
                warm_rss[pid] = rss_kib(pid)

    threads = [threading.Thread(target=client, args=(seed,)) for seed in range(CLIENTS)]
    sampler = threading.Thread(target=sample_when_warm)
    for thread in [*threads, sampler]:
        thread.start()
    for thread in [*threads, sampler]:
        thread.join()
    end_rss = {pid: rss_kib(pid) for server in fleet for pid in server.worker_pids()}

    assert not crashed, crashed
    assert not unexpected, unexpected[:5]
    requests_sent = sum(kinds.values())
    proof.count("scale-out: requests under mixed load", requests_sent)
    assert all(
        kinds[kind]
        for kind in ("exchange", "exchange by assertion", "impersonation", "refresh", "revocation")
    ), kinds
    # Audit rows equal tokens issued: one row per answer that issued tokens, naming each of them.
    exchanged = events(EventType.TOKEN_EXCHANGED)
    impersonated = events(EventType.USER_IMPERSONATED)
    # (An impersonation by exchange writes both rows; a refresh of its tokens, user.impersonated.)
    assert len(exchanged) == kinds["exchange"] + kinds["exchange by assertion"] + kinds["impersonation"]
    assert len(impersonated) == kinds["impersonation"] + kinds["refresh"]
    audited = {
        token["jti"]: token["token_type"]
        for row in [*exchanged, *impersonated]
        for token in row.payload["tokens"]
    }
    assert Counter(audited.values()) == {
        ACCESS_TOKEN_TYPE: token_counts["access_token"],
        REFRESH_TOKEN_TYPE: token_counts["refresh_token"],
        ID_TOKEN_TYPE: token_counts["id_token"],
    }
    # Every client assertion used once, its jti kept in the Redis every process shares.
    assert len(shared_cache.keys("replay:*")) == kinds["exchange by assertion"]
    # Revocation and rotation delete tokens (and their records) that were audited when issued.
    assert set(ExchangedToken.objects.values_list("jti", flat=True)) <= set(audited)
    assert not AccessToken.objects.filter(token_checksum__in=[sha256(token) for token in revoked]).exists()
    assert not events(EventType.TOKEN_EXCHANGE_REFUSED)
    # The same workers served from the warm sample to the end (none crashed or was replaced),
    # and none grew by more than 3 MB (measured: under 1 MB; a leak of 10 kB a request, some
    # 350 requests a worker after the warm sample, is more).
    assert set(end_rss) == set(warm_rss), (warm_rss, end_rss)
    grown = {pid: end_rss[pid] - warm_rss[pid] for pid in end_rss}
    assert all(growth <= 3072 for growth in grown.values()), (warm_rss, end_rss)
    Path(os.environ.get("SCALE_OUT_FIGURES", "/dev/null")).write_text(
        f"{requests_sent} requests in {LOAD_SECONDS:.0f} s: {dict(kinds)}; "
        f"worker RSS kB warm {warm_rss} end {end_rss}\n"
    )
