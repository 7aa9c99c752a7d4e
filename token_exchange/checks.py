"""System checks: a site that forgets a setting finds out at startup, not from a client.

Each id is stable; message and hint stay together here.
"""

from __future__ import annotations

import difflib
import re
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.urls import NoReverseMatch, resolve, reverse
from oauth2_provider.settings import oauth2_settings

from token_exchange.conf import SETTINGS, invalid, token_exchange_settings
from token_exchange.jwt import client_assertion
from token_exchange.resource_server.checks import resource_server_only
from token_exchange.resource_server.site import is_subclass

E001 = Error(
    "The OAuth2 server class DOT uses does not register the token exchange grant.",
    hint=(
        "With OIDC_ENABLED, set OAUTH2_PROVIDER['OIDC_SERVER_CLASS'] = "
        "'token_exchange.oauth.server.OIDCServer'; "
        "without OIDC, set OAUTH2_PROVIDER['OAUTH2_SERVER_CLASS'] = 'token_exchange.oauth.server.Server'."
    ),
    id="token_exchange.E001",
)
E002 = Error(
    "OIDC_ENABLED is on but OAUTH2_PROVIDER['OAUTH2_SERVER_CLASS'] is not an OpenID Connect server, "
    "so DOT ignores OIDC_SERVER_CLASS and issues no ID tokens.",
    hint=(
        "Remove OAUTH2_PROVIDER['OAUTH2_SERVER_CLASS'] and set "
        "OAUTH2_PROVIDER['OIDC_SERVER_CLASS'] = 'token_exchange.oauth.server.OIDCServer'."
    ),
    id="token_exchange.E002",
)
E003 = Error(
    "OAUTH2_PROVIDER['OAUTH2_VALIDATOR_CLASS'] is not a token exchange validator.",
    hint=(
        "Set OAUTH2_PROVIDER['OAUTH2_VALIDATOR_CLASS'] = "
        "'token_exchange.oauth.validator.TokenExchangeValidator' (or a subclass)."
    ),
    id="token_exchange.E003",
)
E004 = Error(
    "OAUTH2_PROVIDER['OAUTH2_BACKEND_CLASS'] drops repeated parameters of token exchange requests.",
    hint=(
        "Set OAUTH2_PROVIDER['OAUTH2_BACKEND_CLASS'] = "
        "'token_exchange.oauth.backend.TokenExchangeOAuthLibCore' (or a subclass)."
    ),
    id="token_exchange.E004",
)
E005 = Error(
    "The URL named 'oauth2_provider:token' is not served by token_exchange.oauth.views.TokenView.",
    hint=(
        "Include 'token_exchange.urls' instead of 'oauth2_provider.urls', "
        "e.g. path('o/', include('token_exchange.urls'))."
    ),
    id="token_exchange.E005",
)
# What RFC 9068 JWT access tokens need: a key that signs them (minting) and OpenID Connect on,
# since only DOT's OIDC views publish its public half at jwks_uri, where resource servers fetch it.
# A site without OIDC usually sets OAUTH2_SERVER_CLASS, which wins over OIDC_SERVER_CLASS: left in
# place, it turns the advice into E002.
_JWT_ACCESS_TOKENS_HINT = (
    "JWT access tokens need an RSA private key to sign them and OpenID Connect on to publish its "
    "public key at jwks_uri. Make a key with 'openssl genpkey -algorithm RSA -pkeyopt "
    "rsa_keygen_bits:2048 -out oidc.key', keep the file out of version control, and set "
    "OAUTH2_PROVIDER['OIDC_RSA_PRIVATE_KEY'] to its PEM text (read from the file or an environment "
    "variable), 'OIDC_ENABLED': True and 'OIDC_SERVER_CLASS': 'token_exchange.oauth.server.OIDCServer', and "
    "remove OAUTH2_PROVIDER['OAUTH2_SERVER_CLASS'] (DOT uses OIDC_SERVER_CLASS only while it is "
    "unset). If no client asks for JWT access tokens, add 'token_exchange.W001' to "
    "SILENCED_SYSTEM_CHECKS."
)
W001 = Warning(
    "OAUTH2_PROVIDER['OIDC_RSA_PRIVATE_KEY'] is not set: JWT access tokens cannot be issued.",
    hint=_JWT_ACCESS_TOKENS_HINT,
    id="token_exchange.W001",
)
W001_WITHOUT_OIDC = Warning(
    "OAUTH2_PROVIDER['OIDC_ENABLED'] is off: JWT access tokens are signed with OIDC_RSA_PRIVATE_KEY, "
    "but no jwks_uri publishes its public key, so no resource server can verify them.",
    hint=_JWT_ACCESS_TOKENS_HINT,
    id="token_exchange.W001",
)

W002 = Warning(
    "DOT's OAuth2TokenMiddleware lets bearer tokens log users in, but "
    "token_exchange.impersonation.guard.ImpersonationGuardMiddleware is not installed: an impersonated "
    "token of a staff user would open the admin.",
    hint=(
        "Add 'token_exchange.impersonation.guard.ImpersonationGuardMiddleware' to MIDDLEWARE, or set "
        "TOKEN_EXCHANGE['PRIVILEGED_URL_PREFIXES'] and guard those views yourself."
    ),
    id="token_exchange.W002",
)

E006 = Error(
    "TOKEN_EXCHANGE['REPLAY_CACHE'] names no cache, or a DummyCache that remembers nothing: every "
    "client assertion and self-signed subject JWT will be refused.",
    hint="Point TOKEN_EXCHANGE['REPLAY_CACHE'] at a CACHES alias shared by all processes (Redis, "
    "Memcached or the database cache).",
    id="token_exchange.E006",
)
W003 = Warning(
    "TOKEN_EXCHANGE['REPLAY_CACHE'] is a per-process cache: a client assertion or subject JWT used in "
    "one process can be replayed in another.",
    hint="Point TOKEN_EXCHANGE['REPLAY_CACHE'] at a CACHES alias shared by all processes (Redis, "
    "Memcached or the database cache), or run a single process.",
    id="token_exchange.W003",
)
W004 = Warning(
    "TOKEN_EXCHANGE['REPLAY_CACHE'] culls entries once it holds MAX_ENTRIES items: a client sending "
    "that many JWTs within an hour, or anything else writing to that cache, can evict the jti of a "
    "JWT that is still valid, which could then be accepted again.",
    hint="Give the replay cache an alias of its own with OPTIONS['MAX_ENTRIES'] of at least 100000 "
    "(above the client-signed JWTs you accept in an hour), or use Redis with maxmemory-policy "
    "noeviction.",
    id="token_exchange.W004",
)

_BEARER_LOGIN_MIDDLEWARE = "oauth2_provider.middleware.OAuth2TokenMiddleware"
_GUARD_MIDDLEWARE = "token_exchange.impersonation.guard.ImpersonationGuardMiddleware"


@register()
def check_dot_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if resource_server_only():  # it issues nothing: docs/resource-servers.md
        return []
    user_settings = oauth2_settings.user_settings or {}
    defaults = oauth2_settings.defaults
    errors: list[CheckMessage] = []
    # DOT's effective server class: OIDC_SERVER_CLASS when OIDC is on, unless
    # OAUTH2_SERVER_CLASS is set, which then wins (and turns OpenID Connect off).
    server_class = oauth2_settings.OAUTH2_SERVER_CLASS
    if not is_subclass(server_class, "token_exchange.oauth.server._TokenExchangeMixin"):
        errors.append(E001)
    if oauth2_settings.OIDC_ENABLED and not is_subclass(server_class, "oauthlib.openid.Server"):
        errors.append(E002)
    for name, base, message in (
        ("OAUTH2_VALIDATOR_CLASS", "token_exchange.oauth.validator.TokenExchangeValidator", E003),
        ("OAUTH2_BACKEND_CLASS", "token_exchange.oauth.backend.TokenExchangeOAuthLibCore", E004),
    ):
        if not is_subclass(user_settings.get(name, defaults[name]), base):
            errors.append(message)
    if not user_settings.get("OIDC_RSA_PRIVATE_KEY"):
        errors.append(W001)
    elif not oauth2_settings.OIDC_ENABLED:
        errors.append(W001_WITHOUT_OIDC)
    return errors


W014 = Warning(
    "OAUTH2_PROVIDER['OIDC_ISS_ENDPOINT'] is not set: the issuer, the iss claim of every token and "
    "the discovery documents follow each request's Host header (and X-Forwarded-Host with "
    "USE_X_FORWARDED_HOST), which a proxy or a second name in ALLOWED_HOSTS can change.",
    hint=(
        "Set OAUTH2_PROVIDER['OIDC_ISS_ENDPOINT'] to the public issuer URL: where clients reach "
        "token_exchange.urls, e.g. 'https://id.example.com/o', without a trailing slash."
    ),
    id="token_exchange.W014",
)


@register(Tags.security, deploy=True)
def check_issuer_is_fixed(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W014, a deployment check (``manage.py check --deploy``): on one runserver at one address,
    an issuer taken from the request is the right one. Behind a proxy, or under a second name, it
    changes with the request: tokens name an issuer that resource servers, comparing ``iss`` byte
    for byte, do not expect, and discovery hands clients another host's endpoints."""
    if resource_server_only() or oauth2_settings.OIDC_ISS_ENDPOINT:
        return []
    return [W014]


@register(Tags.security)
def check_impersonation_guard(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    bearer_login = any(is_subclass(path, _BEARER_LOGIN_MIDDLEWARE) for path in middleware)
    guarded = any(is_subclass(path, _GUARD_MIDDLEWARE) for path in middleware)
    return [W002] if bearer_login and not guarded else []


@register(Tags.urls)
def check_token_view(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    if resource_server_only():  # it issues nothing: docs/resource-servers.md
        return []
    from token_exchange.oauth.views import TokenView

    try:
        match = resolve(reverse("oauth2_provider:token"))
    except NoReverseMatch:
        return [E005]
    view_class = getattr(match.func, "view_class", None)
    if not (isinstance(view_class, type) and issubclass(view_class, TokenView)):
        return [E005]
    return []


# Django's backends that drop entries, expired or not, once MAX_ENTRIES (default 300) is reached.
_CULLING_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.filebased.FileBasedCache",
    "django.core.cache.backends.db.DatabaseCache",
)
MIN_REPLAY_CACHE_ENTRIES = 100_000
_PER_PROCESS_CACHES = (
    "django.core.cache.backends.locmem.LocMemCache",
    # FileBasedCache.add is a read then a write, not atomic across processes.
    "django.core.cache.backends.filebased.FileBasedCache",
)


def _replay_cache_config() -> dict[str, Any] | None:
    caches = getattr(settings, "CACHES", None) or {}
    config = caches.get(token_exchange_settings.REPLAY_CACHE)
    return dict(config) if isinstance(config, dict) else None


def _replay_cache_backend() -> str | None:
    config = _replay_cache_config()
    return None if config is None else str(config.get("BACKEND", ""))


@register(Tags.caches)
def check_replay_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    backend = _replay_cache_backend()
    if backend is None or is_subclass(backend, "django.core.cache.backends.dummy.DummyCache"):
        return [E006]
    return []


@register(Tags.caches, deploy=True)
def check_replay_cache_is_shared(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Deployment checks (``manage.py check --deploy``): one small runserver process is fine."""
    config = _replay_cache_config()
    if config is None:
        return []
    backend = str(config.get("BACKEND", ""))
    messages: list[CheckMessage] = []
    if any(is_subclass(backend, path) for path in _PER_PROCESS_CACHES):
        messages.append(W003)
    if any(is_subclass(backend, path) for path in _CULLING_CACHES):
        max_entries = (config.get("OPTIONS") or {}).get("MAX_ENTRIES", 300)
        if int(max_entries) < MIN_REPLAY_CACHE_ENTRIES:
            messages.append(W004)
    return messages


# W015/W016: a Redis server evicts keys of its own accord once it holds maxmemory bytes, unless its
# maxmemory-policy is noeviction. allkeys-* policies evict any key, volatile-* ones any key with a
# TTL, and every jti key has one (replay.consume). Two ids, so that a site whose Redis cannot be
# reached from where `check --deploy` runs (a build step) can silence W016, "not verified", and
# still hear W015, "verified to evict", wherever the server does answer.
_REDIS_CACHE = "django.core.cache.backends.redis.RedisCache"
# Each step of asking (connecting, the handshake, INFO) waits at most this long...
REDIS_TIMEOUT_SECONDS = 2
# ...and each server at most this long in all: a name that takes long to resolve, several
# addresses to try, or an answer trickling in a byte at a time, which no socket timeout ends.
# The servers are asked side by side, so the check takes this long at worst, however many.
REDIS_DEADLINE_SECONDS = 5.0
# RedisCache's OPTIONS that are Django's and not the connection pool's (RedisCacheClient).
_NOT_POOL_OPTIONS = ("serializer", "pool_class", "parser_class")


def redis_may_evict(*, maxmemory: int, policy: str) -> bool:
    """Can a Redis server with this ``maxmemory`` (bytes; 0 is no limit) and ``maxmemory-policy``
    drop a replay key before its TTL ends? Only ``noeviction`` keeps every key: a write then fails
    when memory is full, and the token endpoint refuses the JWT (fail closed). A policy this
    function does not know is taken to evict."""
    return maxmemory > 0 and policy.strip().lower() != "noeviction"


def _redis_server_name(url: str, index: int) -> str:
    """host:port (a socket's path for unix://): never the URL, which may hold a password."""
    try:
        parts = urlsplit(url.strip())
        if parts.scheme == "unix":
            if parts.path:
                return parts.path
        elif parts.scheme in ("redis", "rediss") and parts.hostname:
            port = parts.port or 6379
            return f"[{parts.hostname}]:{port}" if ":" in parts.hostname else f"{parts.hostname}:{port}"
    except ValueError:  # a port that is not a number
        pass
    return f"number {index + 1} in LOCATION"


def _redis_memory_policy(url: str, options: dict[str, Any]) -> tuple[int, str] | str:
    """``(maxmemory, maxmemory_policy)`` from the server's ``INFO memory`` (which managed services
    that disable CONFIG GET still answer), or why it could not be had. Never raises.

    The reason names an error class, never the error's text: a URL that does not parse comes
    back in it, password and all.
    """
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        return "redis-py is not installed"
    try:
        pool = redis.ConnectionPool.from_url(url.strip(), **options)
    except Exception:
        return "LOCATION is not a Redis URL"
    # from_url lets the URL's query string win over keyword arguments: the bounds are set after.
    pool.connection_kwargs.update(
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),
    )
    client = redis.Redis(connection_pool=pool)
    try:
        memory = client.info("memory")
    except redis.AuthenticationError:
        return "authentication failed"
    except redis.TimeoutError:
        return f"no answer within {REDIS_TIMEOUT_SECONDS} seconds"
    except redis.ConnectionError:
        return "no connection"
    except redis.ResponseError:
        return "INFO memory was refused"
    except Exception as exc:  # e.g. an OPTIONS key the connection does not take
        return type(exc).__name__
    finally:
        try:
            client.close()
            pool.disconnect()
        except Exception:  # noqa: S110 - closing what may never have opened
            pass
    try:
        return int(memory["maxmemory"]), str(memory["maxmemory_policy"])
    except (KeyError, TypeError, ValueError):  # a server that only looks like Redis
        return "INFO memory gave no maxmemory and maxmemory_policy"


def _ask_redis_servers(urls: list[str], options: dict[str, Any]) -> list[tuple[int, str] | str]:
    """Each server's answer, asked side by side, within REDIS_DEADLINE_SECONDS in all. A server
    still being asked then is given up; its daemon thread ends with its socket timeouts and does
    not keep ``manage.py`` from exiting."""
    late = f"no answer within {REDIS_DEADLINE_SECONDS:g} seconds"
    answers: list[tuple[int, str] | str] = [late] * len(urls)

    def ask(index: int, url: str) -> None:
        try:
            answers[index] = _redis_memory_policy(url, options)
        except Exception as exc:  # it catches what it knows of; nothing may escape a thread
            answers[index] = type(exc).__name__

    threads = [
        threading.Thread(target=ask, args=(index, url), name="token-exchange-redis-check", daemon=True)
        for index, url in enumerate(urls)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + REDIS_DEADLINE_SECONDS
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return list(answers)  # a copy: an answer arriving later changes nothing


def _w015(name: str, maxmemory: int, policy: str) -> Warning:
    return Warning(
        f"TOKEN_EXCHANGE['REPLAY_CACHE'] is kept by the Redis server {name}, which evicts keys once "
        f"it holds maxmemory ({maxmemory} bytes) under maxmemory-policy {policy}: the jti of a JWT "
        "that is still valid can be evicted (each has a TTL, so volatile-* policies evict them "
        "too), and the JWT accepted again.",
        hint="Set 'maxmemory-policy noeviction' on that server: when it is full, a write fails "
        "instead of forgetting a key, and the token endpoint refuses client-signed JWTs until there "
        "is room (it fails closed). Or give the replay store a Redis of its own, with noeviction or "
        "maxmemory 0.",
        id="token_exchange.W015",
    )


def _w016(name: str, reason: str) -> Warning:
    return Warning(
        f"The memory policy of the Redis server {name} behind TOKEN_EXCHANGE['REPLAY_CACHE'] could "
        f"not be verified ({reason}): if it evicts keys once it holds maxmemory, the jti of a JWT "
        "that is still valid can be evicted, and the JWT accepted again.",
        hint="Make sure the server runs with 'maxmemory-policy noeviction' or 'maxmemory 0' "
        "('redis-cli INFO memory' shows both), and that this site's credentials may run INFO. If it "
        "does and cannot be reached from where 'check --deploy' runs, add 'token_exchange.W016' to "
        "SILENCED_SYSTEM_CHECKS.",
        id="token_exchange.W016",
    )


@register(Tags.caches, deploy=True)
def check_replay_cache_eviction(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """W015 and W016, deployment checks that ask each Redis server in the replay cache's LOCATION
    for its memory policy (the first is written to; the others are read from, and one of them may
    be the next to be written to). Other backends: W003 and W004. A resource server that serves
    no token endpoint keeps no jti and is not asked."""
    config = _replay_cache_config()
    if config is None or not is_subclass(str(config.get("BACKEND", "")), _REDIS_CACHE):
        return []
    if resource_server_only():
        return []
    location = config.get("LOCATION", "")
    # As RedisCache splits it: a string of URLs separated by ',' or ';', or a list of them.
    if isinstance(location, str):
        urls = re.split("[;,]", location)
    elif isinstance(location, (list, tuple)):
        urls = [str(url) for url in location]
    else:
        urls = [""]  # not a Redis URL: W016 says so
    options = config.get("OPTIONS") or {}
    pool_options = (
        {k: v for k, v in options.items() if k not in _NOT_POOL_OPTIONS} if isinstance(options, dict) else {}
    )
    messages: list[CheckMessage] = []
    for index, (url, answer) in enumerate(zip(urls, _ask_redis_servers(urls, pool_options), strict=True)):
        name = _redis_server_name(url, index)
        if isinstance(answer, str):
            messages.append(_w016(name, answer))
        elif redis_may_evict(maxmemory=answer[0], policy=answer[1]):
            messages.append(_w015(name, *answer))
    return messages


W005 = Warning(
    "The user model's admin lacks token_exchange.admin.ImpersonationUserAdminMixin: no impersonator "
    "roles on the user page and no Impersonate button.",
    hint=(
        "Add 'token_exchange.contrib.user_admin' to INSTALLED_APPS after 'django.contrib.admin' (and "
        "after the app that registers your user admin), or add "
        "token_exchange.admin.ImpersonationUserAdminMixin to your own user admin's bases."
    ),
    id="token_exchange.W005",
)
W006 = Warning(
    "OAUTH2_PROVIDER['APPLICATION_ADMIN_CLASS'] is not token_exchange.admin.ApplicationAdmin: client "
    "policies and keys are not editable on the application page.",
    hint=(
        "Set OAUTH2_PROVIDER['APPLICATION_ADMIN_CLASS'] = 'token_exchange.admin.ApplicationAdmin' "
        "(or a subclass)."
    ),
    id="token_exchange.W006",
)
W007 = Warning(
    "token_exchange.impersonation.banner.ImpersonationBannerMiddleware is not installed: a support user "
    "impersonating from the admin sees no banner and no Stop button, and expired impersonations are only "
    "ended when their tokens are next used.",
    hint=(
        "Add 'token_exchange.impersonation.banner.ImpersonationBannerMiddleware' to MIDDLEWARE after "
        "AuthenticationMiddleware."
    ),
    id="token_exchange.W007",
)
_BANNER_MIDDLEWARE = "token_exchange.impersonation.banner.ImpersonationBannerMiddleware"


@register(Tags.admin)
def check_admin_screens(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Only when the admin is installed: the hooks into admins this app does not own."""
    from django.apps import apps

    if not apps.is_installed("django.contrib.admin"):
        return []
    from django.contrib import admin
    from django.contrib.auth import get_user_model

    warnings: list[CheckMessage] = []
    User = get_user_model()
    user_admin = admin.site.get_model_admin(User) if admin.site.is_registered(User) else None
    if user_admin is not None and not getattr(user_admin, "token_exchange_impersonation", False):
        warnings.append(W005)
    if not is_subclass(oauth2_settings.APPLICATION_ADMIN_CLASS, "token_exchange.admin.ApplicationAdmin"):
        warnings.append(W006)
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    if not any(is_subclass(path, _BANNER_MIDDLEWARE) for path in middleware):
        warnings.append(W007)
    if getattr(user_admin, "token_exchange_impersonation", False):
        from token_exchange.impersonation.sessions import server_side_sessions

        if not server_side_sessions():
            warnings.append(W009)
    return warnings


W009 = Warning(
    "SESSION_ENGINE keeps sessions in signed cookies: nothing at this server could end an "
    "impersonation started from the admin when the support user's session ends, so the Impersonate "
    "button is hidden and starting one is refused.",
    hint=(
        "Use a server-side session engine (django.contrib.sessions.backends.db, cache, cached_db or file)."
    ),
    id="token_exchange.W009",
)
W010 = Warning(
    "TOKEN_EXCHANGE['THROTTLE_CACHE'] names no cache, or a DummyCache that remembers nothing: clients "
    "whose exchanges keep being refused are never throttled.",
    hint="Point TOKEN_EXCHANGE['THROTTLE_CACHE'] at a CACHES alias shared by all processes, or set "
    "TOKEN_EXCHANGE['THROTTLE_REFUSALS'] = 0 to turn throttling off on purpose.",
    id="token_exchange.W010",
)
W011 = Warning(
    "TOKEN_EXCHANGE['THROTTLE_CACHE'] is a per-process cache: each process counts refusals on its "
    "own, so a client may be refused THROTTLE_REFUSALS times per process and window.",
    hint="Point TOKEN_EXCHANGE['THROTTLE_CACHE'] at a CACHES alias shared by all processes (Redis, "
    "Memcached or the database cache).",
    id="token_exchange.W011",
)


def _throttle_cache_backend() -> str | None:
    """The backend of the throttle's cache, or None for no such alias; "" when throttling is off or
    its settings are invalid (E008 says so)."""
    from django.core.exceptions import ImproperlyConfigured

    try:
        if token_exchange_settings.THROTTLE_REFUSALS == 0:
            return ""
        alias = token_exchange_settings.THROTTLE_CACHE
    except ImproperlyConfigured:
        return ""
    config = (getattr(settings, "CACHES", None) or {}).get(alias)
    return str(config.get("BACKEND", "")) if isinstance(config, dict) else None


@register(Tags.caches)
def check_throttle_cache(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    backend = _throttle_cache_backend()
    if backend is None or (backend and is_subclass(backend, "django.core.cache.backends.dummy.DummyCache")):
        return [W010]
    return []


@register(Tags.caches, deploy=True)
def check_throttle_cache_is_shared(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    backend = _throttle_cache_backend()
    if backend and any(is_subclass(backend, path) for path in _PER_PROCESS_CACHES):
        return [W011]
    return []


W017 = Warning(
    "TOKEN_EXCHANGE['FEDERATION_ALLOW_HTTP_LOOPBACK'] is on: a trusted issuer's keys may be fetched "
    "over plain HTTP from this machine's loopback interface, where any local process can serve them.",
    hint="Turn it off outside tests and development; trusted issuers publish their keys over HTTPS.",
    id="token_exchange.W017",
)
W018 = Warning(
    "TOKEN_EXCHANGE['FEDERATION_CACHE'] is a per-process cache: every process fetches each trusted "
    "issuer's keys on its own, and an unknown kid costs the issuer one request per process and interval.",
    hint="Point TOKEN_EXCHANGE['FEDERATION_CACHE'] at a CACHES alias shared by all processes (Redis, "
    "Memcached or the database cache).",
    id="token_exchange.W018",
)


@register(Tags.security, deploy=True)
def check_federation_loopback(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django.core.exceptions import ImproperlyConfigured

    try:
        return [W017] if token_exchange_settings.FEDERATION_ALLOW_HTTP_LOOPBACK else []
    except ImproperlyConfigured:
        return []  # E008 says so


@register(Tags.caches, deploy=True)
def check_federation_cache_is_shared(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django.core.exceptions import ImproperlyConfigured

    try:
        alias = token_exchange_settings.FEDERATION_CACHE
    except ImproperlyConfigured:
        return []
    config = (getattr(settings, "CACHES", None) or {}).get(alias)
    backend = str(config.get("BACKEND", "")) if isinstance(config, dict) else ""
    if backend and any(is_subclass(backend, path) for path in _PER_PROCESS_CACHES):
        return [W018]
    return []


# Hashers built to be slow (key stretching for passwords people choose), and their subclasses.
_SLOW_HASHERS = (
    "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    "django.contrib.auth.hashers.Argon2PasswordHasher",
    "django.contrib.auth.hashers.BCryptSHA256PasswordHasher",  # and BCryptPasswordHasher
    "django.contrib.auth.hashers.ScryptPasswordHasher",
)
_FAST_SECRET_HINT = (
    "Add 'token_exchange.hashers.ClientSecretHasher' to PASSWORD_HASHERS after your password hasher "
    "and set OAUTH2_PROVIDER['CLIENT_SECRET_HASHER'] = 'token_exchange_sha256' (for generated secrets "
    "only), or authenticate clients with private_key_jwt (manage.py createclientkey)."
)


def _client_secret_hasher() -> Any:
    from django.contrib.auth.hashers import get_hasher

    return get_hasher(oauth2_settings.CLIENT_SECRET_HASHER)


@register(Tags.security)
def check_client_secret_hasher(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """Every request a client authenticates with its secret pays for this hasher once."""
    if resource_server_only():  # no client authenticates here
        return []
    try:
        hasher = _client_secret_hasher()
    except ValueError:
        return [
            Error(
                f"OAUTH2_PROVIDER['CLIENT_SECRET_HASHER'] = {oauth2_settings.CLIENT_SECRET_HASHER!r} names "
                "no hasher in PASSWORD_HASHERS: DOT cannot hash or check client secrets.",
                hint="List the hasher in PASSWORD_HASHERS, or set CLIENT_SECRET_HASHER to 'default'.",
                id="token_exchange.E007",
            )
        ]
    if any(is_subclass(type(hasher), path) for path in _SLOW_HASHERS):
        return [
            Warning(
                f"Client secrets are hashed with {hasher.algorithm!r}, a hasher made slow for passwords: "
                "every token request a client authenticates with its secret spends hundreds of "
                "milliseconds hashing it (token exchanges of resource servers included).",
                hint=_FAST_SECRET_HINT,
                id="token_exchange.W008",
            )
        ]
    return []


E010 = Error(
    "TOKEN_EXCHANGE['CLIENT_AUTHENTICATION'] is 'token_exchange' while django-oauth-toolkit's own JWT "
    "client authentication is enabled: this package would verify every client_assertion against "
    "ClientKey rows, and the clients' client_jwks would never be read.",
    hint=(
        "Run 'manage.py export_client_jwks --write' and set TOKEN_EXCHANGE['CLIENT_AUTHENTICATION'] = "
        "'oauth2_provider'; or keep this package's and remove 'private_key_jwt' and 'client_secret_jwt' "
        "from OAUTH2_PROVIDER['OAUTH2_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED'] and "
        "['OIDC_TOKEN_ENDPOINT_AUTH_METHODS_SUPPORTED']. See docs/dot-compatibility.md."
    ),
    id="token_exchange.E010",
)
E011 = Error(
    "TOKEN_EXCHANGE['CLIENT_AUTHENTICATION'] is 'oauth2_provider', but the installed "
    "django-oauth-toolkit cannot authenticate clients by JWT assertion: every request carrying a "
    "client_assertion will be refused.",
    hint=(
        "Upgrade django-oauth-toolkit to a release with RFC 7523 client authentication (an application "
        "model with client_jwks), or set TOKEN_EXCHANGE['CLIENT_AUTHENTICATION'] = 'token_exchange'."
    ),
    id="token_exchange.E011",
)


@register(Tags.security)
def check_client_authentication(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """One implementation of private_key_jwt, and one that exists (client_assertion decides)."""
    if client_assertion.ours():
        return [E010] if client_assertion.dot_client_authentication_enabled() else []
    return [] if client_assertion.dot_client_authentication_installed() else [E011]


E017 = Error(
    "TOKEN_EXCHANGE['FEDERATION_RESOLVER'] is token_exchange.contrib.allauth.resolve, but "
    "'allauth.socialaccount' is not in INSTALLED_APPS: the first unlinked subject of a trusted "
    "issuer would fail with a server error.",
    hint="Install django-allauth (pip install 'django-token-exchange[allauth]') and add "
    "'allauth.socialaccount' to INSTALLED_APPS, or name another resolver.",
    id="token_exchange.E017",
)
_ALLAUTH_RESOLVER = "token_exchange.contrib.allauth.resolve"


@register()
def check_federation_resolver(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    from django.apps import apps

    value = (getattr(settings, "TOKEN_EXCHANGE", None) or {}).get("FEDERATION_RESOLVER")
    named = (
        value
        if isinstance(value, str)
        else f"{getattr(value, '__module__', '')}.{getattr(value, '__name__', '')}"
    )
    if named == _ALLAUTH_RESOLVER and not apps.is_installed("allauth.socialaccount"):
        return [E017]
    return []


E008 = "token_exchange.E008"


@register()
def check_setting_values(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E008: a ``TOKEN_EXCHANGE`` value of the wrong type or out of range, one per key.

    The rules are ``conf.SETTINGS``, the ones the properties apply at request time.
    """
    configured = getattr(settings, "TOKEN_EXCHANGE", {})
    if not isinstance(configured, dict):
        return [
            Error(
                f"TOKEN_EXCHANGE must be a dict, not {type(configured).__name__}: none of it is read.",
                hint="Write TOKEN_EXCHANGE = {'REPLAY_CACHE': 'default', ...} with the keys of "
                "docs/settings.md, or remove it to get the defaults.",
                id=E008,
            )
        ]
    messages: list[CheckMessage] = []
    for name, value in configured.items():
        found = invalid(name, value) if name in SETTINGS else None  # unknown keys: E009
        if found is not None:
            message, hint = found
            messages.append(Error(message, hint=hint, id=E008))
    return messages


@register()
def check_setting_keys(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E009: a ``TOKEN_EXCHANGE`` key this package does not read; a typo would leave the default."""
    configured = getattr(settings, "TOKEN_EXCHANGE", {})
    if not isinstance(configured, dict):
        return []  # E008
    messages: list[CheckMessage] = []
    for name in configured:
        if name in SETTINGS:
            continue
        close = difflib.get_close_matches(str(name).upper(), SETTINGS, n=1)
        messages.append(
            Error(
                f"TOKEN_EXCHANGE has a key this package does not read: {name!r}; its value is ignored.",
                hint=f"Did you mean {close[0]!r}?"
                if close
                else f"Remove it. The keys are {', '.join(SETTINGS)} (docs/settings.md).",
                id="token_exchange.E009",
            )
        )
    return messages


# Written in the token's own transaction, on the access token's database: the issued token, the
# records of what it may do, the audit row, and the lock on an admin-started session.
TOKEN_TRANSACTION_MODELS = (
    "OAUTH2_PROVIDER_REFRESH_TOKEN_MODEL",
    "OAUTH2_PROVIDER_ID_TOKEN_MODEL",
    "OAUTH2_PROVIDER_GRANT_MODEL",
    "token_exchange.ExchangedToken",
    "token_exchange.AuditEvent",
    "token_exchange.ImpersonationSession",
)


@register()
def check_token_tables_share_a_database(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """E012: a router that splits the token transaction's tables over several databases."""
    from django.apps import apps
    from django.db import router
    from oauth2_provider.models import get_access_token_model

    access_token = get_access_token_model()
    alias = router.db_for_write(access_token)
    messages: list[CheckMessage] = []
    for name in TOKEN_TRANSACTION_MODELS:
        # DOT's default when a site does not spell the setting out (a resource server seldom does).
        dot_name = name.removeprefix("OAUTH2_PROVIDER_")
        model = apps.get_model(getattr(oauth2_settings, dot_name) if name.isupper() else name)
        routed = router.db_for_write(model)
        if routed != alias:
            messages.append(
                Error(
                    f"{model._meta.label} is routed for writing to {routed!r}, but "
                    f"{access_token._meta.label} to {alias!r}: a token, its records and its audit row "
                    "are written in one transaction, and a refused or failed issuance must leave "
                    "none of them.",
                    hint=(
                        f"Route {model._meta.label} to the database of {access_token._meta.label} "
                        "in your DATABASE_ROUTERS (db_for_write)."
                    ),
                    obj=model,
                    id="token_exchange.E012",
                )
            )
    return messages


@register(Tags.database)
def check_confusable_client_ids(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """E013: an application whose client_id reads as an absolute URI (``client_ids``).

    It reads the database, so Django runs it only for ``check --database`` and ``migrate``; it
    says nothing while the application table does not exist yet, or cannot be read.
    """
    from django.db import DatabaseError, connections, router
    from oauth2_provider.models import get_application_model

    from token_exchange.client_ids import is_confusable

    Application = get_application_model()
    alias = router.db_for_read(Application)
    if not databases or alias not in databases:
        return []
    try:
        if Application._meta.db_table not in connections[alias].introspection.table_names():
            return []
        applications = [
            application
            for application in Application.objects.using(alias)
            .filter(client_id__contains=":")
            .only("pk", "name", "client_id")
            .order_by("pk")
            if is_confusable(application.client_id)
        ]
    except DatabaseError:
        return []
    return [
        Error(
            f"The client_id {application.client_id!r} of application {application.pk} reads as an "
            "absolute URI: a token's audience names clients and resource servers alike, so this "
            "client could pass for a resource server. It cannot authenticate.",
            hint=(
                "Give the application a client_id without a scheme (letters, digits, '-', '_', '.') "
                "in the application admin, and configure the client with it."
            ),
            obj=application,
            id="token_exchange.E013",
        )
        for application in applications
    ]


@register(Tags.database)
def check_resource_uris_claimed_twice(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[CheckMessage]:
    """E014: a resource URI that the policies of two clients both claim (``resource_uris``).

    A database check, like E013: silent while the table does not exist yet or cannot be read.
    """
    from django.db import DatabaseError, connections, router

    from token_exchange.models import ClientPolicy

    alias = router.db_for_read(ClientPolicy)
    if not databases or alias not in databases:
        return []
    try:
        if ClientPolicy._meta.db_table not in connections[alias].introspection.table_names():
            return []
        claims: dict[str, list[Any]] = {}
        for policy in ClientPolicy.objects.using(alias).exclude(resource_uris=[]).order_by("pk"):
            for uri in policy.resource_uris if isinstance(policy.resource_uris, list) else []:
                claims.setdefault(str(uri), []).append(policy.application_id)
    except DatabaseError:
        return []
    return [
        Error(
            f"The resource URI {uri!r} is claimed by the client policies of applications "
            f"{', '.join(str(pk) for pk in applications)}: each of them is handed, and may "
            "introspect, every token meant for it.",
            hint="Keep the URI in the policy of the one client that serves it.",
            id="token_exchange.E014",
        )
        for uri, applications in sorted(claims.items())
        if len(applications) > 1
    ]
