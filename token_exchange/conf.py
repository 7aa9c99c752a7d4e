"""One door to the ``TOKEN_EXCHANGE`` settings.

Every property reads ``django.conf.settings`` on each access, so ``override_settings`` works and
nothing is cached per process. Defaults live here, never written back into ``settings``.

``SETTINGS`` declares every key and what it may hold: the system checks (``token_exchange.E008``,
``E009``) and the properties read the same rules, and a test fails for a property not declared there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

# What a key may hold. Each rule returns None when the value is fine, else why it is not
# ("" when the value's type says it all).
Rule = Callable[[Any], "str | None"]


def _is_int(value: Any) -> bool:
    # bool is a subclass of int: True would be a lifetime of one second, or an act depth of one.
    return isinstance(value, int) and not isinstance(value, bool)


def _int_from(low: int, high: int, *, or_none: bool = False) -> Rule:
    """An integer from ``low`` to ``high``. The ceiling is a defence too: a lifetime of 10**12
    seconds overflows a datetime at the first refresh (a 500), and a leeway of years accepts
    JWTs that expired long ago, leaving only the replay cache in the way."""

    def rule(value: Any) -> str | None:
        if or_none and value is None:
            return None
        return None if _is_int(value) and low <= value <= high else ""

    return rule


_YEAR = 366 * 24 * 3600
_LIFETIME_RULE = _int_from(1, _YEAR)


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else ""


def _boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else ""


def _one_of(*choices: str) -> Rule:
    def rule(value: Any) -> str | None:
        return None if isinstance(value, str) and value in choices else ""

    return rule


_GUARDS_EVERY_PATH = "until it is, impersonated tokens are refused on every path"


def _url_prefixes(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):  # a bare string included: see PRIVILEGED_URL_PREFIXES
        return _GUARDS_EVERY_PATH
    for prefix in value:
        if not isinstance(prefix, str):
            return f"{prefix!r} is not a string; {_GUARDS_EVERY_PATH}"
        if not prefix.startswith("/"):
            return f"{prefix!r} does not start with '/', so no path matches it; {_GUARDS_EVERY_PATH}"
    return None


def _callable_or_path(value: Any) -> str | None:
    if callable(value):
        return None
    if not isinstance(value, str):
        return ""
    try:
        target = import_string(value)
    except ImportError as error:
        return str(error)
    return None if callable(target) else f"it names a {type(target).__name__}, which cannot be called"


def _model_label(value: Any) -> str | None:
    """Only once the app registry is ready, i.e. in a system check."""
    if not isinstance(value, str):
        return ""
    app_label, _, model_name = value.partition(".")
    if not app_label or not model_name or "." in model_name:
        return "it is not of the form app_label.ModelName"
    from django.apps import apps

    try:
        apps.get_model(app_label, model_name)
    except LookupError as error:
        return str(error)
    return None


class ResourceServerSettings(TypedDict):
    """``TOKEN_EXCHANGE["RESOURCE_SERVER"]`` with its defaults filled in (docs/resource-servers.md)."""

    ISSUER: str | None
    RESOURCE_URI: str | None
    JWKS_URI: str | None
    ALGORITHMS: list[str]
    LEEWAY_SECONDS: int
    INTROSPECTION_CACHE_SECONDS: int
    CACHE: str
    TIMEOUT_SECONDS: int


RESOURCE_SERVER_DEFAULTS = ResourceServerSettings(
    ISSUER=None,
    RESOURCE_URI=None,
    JWKS_URI=None,
    ALGORITHMS=["RS256"],
    LEEWAY_SECONDS=30,
    INTROSPECTION_CACHE_SECONDS=60,
    CACHE="default",
    TIMEOUT_SECONDS=5,
)
# Asymmetric algorithms only: a resource server holds the issuer's public keys, and an HMAC
# "verified" with a public key is the classic algorithm confusion; "none" verifies nothing.
RESOURCE_SERVER_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def _http_url_or_none(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        return "not a string"
    parts = urlsplit(value)
    return None if parts.scheme in ("http", "https") and parts.netloc else "not an absolute http(s) URL"


def _nonempty_string_or_none(value: Any) -> str | None:
    return None if value is None or (isinstance(value, str) and value) else ""


def _algorithms(value: Any) -> str | None:
    if not isinstance(value, (list, tuple)) or not value:
        return ""
    fine = all(isinstance(name, str) and name in RESOURCE_SERVER_ALGORITHMS for name in value)
    return None if fine else ""


def _resource_uri_or_none(value: Any) -> str | None:
    """RFC 8707 §2: a resource indicator is an absolute URI. A bare name would also match
    audiences that are no resource indicators at all, such as the client_ids the authorization
    server puts in ``aud`` of native tokens: a token for client "portal" is no token for a
    service that calls itself "portal". The rule is DOT's, the one ``ClientPolicy.resource_uris``
    uses at the authorization server, so both sides accept the same URIs."""
    if value is None:
        return None
    if not isinstance(value, str):
        return "not a string"
    # Imported here: DOT's validators module reads the application model at import.
    from oauth2_provider.oauth2_validators import is_valid_resource_uri

    return None if is_valid_resource_uri(value) else "not an absolute URI with a host and no fragment"


def _resource_server(value: Any) -> str | None:
    """Each key of the resource server's settings, by its own rule. The ceilings are defences:
    a leeway of hours accepts long-expired tokens, and an introspection cache of hours keeps a
    revoked token working that long (revocation is only seen when the cache asks again)."""
    if not isinstance(value, dict):
        return ""
    rules: dict[str, tuple[str, Rule]] = {
        "ISSUER": ("the issuer's absolute http(s) URL", _http_url_or_none),
        "RESOURCE_URI": ("an absolute URI without a fragment (RFC 8707 §2) or None", _resource_uri_or_none),
        "JWKS_URI": ("an absolute http(s) URL or None", _http_url_or_none),
        "ALGORITHMS": (f"a non-empty list of {', '.join(sorted(RESOURCE_SERVER_ALGORITHMS))}", _algorithms),
        "LEEWAY_SECONDS": ("an integer of seconds from 0 to 300", _int_from(0, 300)),
        "INTROSPECTION_CACHE_SECONDS": ("an integer of seconds from 0 to 300", _int_from(0, 300)),
        "CACHE": ("a CACHES alias (a string)", _string),
        "TIMEOUT_SECONDS": ("an integer of seconds from 1 to 60", _int_from(1, 60)),
    }
    for key, item in value.items():
        if key not in rules:
            return f"it has a key this package does not read: {key!r} (the keys are {', '.join(rules)})"
        expected, rule = rules[key]
        why = rule(item)
        if why is not None:
            return f"{key!r} must be {expected}, not {type(item).__name__} {_shown(item)}" + (
                f" ({why})" if why else ""
            )
    return None


@dataclass(frozen=True)
class Setting:
    """One ``TOKEN_EXCHANGE`` key: what it must be (E008's message), what to write (its hint)."""

    expected: str
    example: str
    rule: Rule


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:59]}…"


def invalid(name: str, value: Any) -> tuple[str, str] | None:
    """E008's message and hint for ``TOKEN_EXCHANGE[name] = value``, or ``None`` if it is fine."""
    declared = SETTINGS[name]
    why = declared.rule(value)
    if why is None:
        return None
    message = (
        f"TOKEN_EXCHANGE[{name!r}] must be {declared.expected}, not {type(value).__name__} {_shown(value)}"
    )
    message += f": {why.rstrip('.')}." if why else "."  # Django's own reasons end with a full stop
    hint = f"Write e.g. TOKEN_EXCHANGE[{name!r}] = {declared.example}, or remove the key to get the default."
    return message, hint


class TokenExchangeSettings:
    @property
    def _user_settings(self) -> dict[str, Any]:
        value = getattr(settings, "TOKEN_EXCHANGE", {})
        return value if isinstance(value, dict) else {}

    def _get(self, name: str, default: Any) -> Any:
        return self._user_settings.get(name, default)

    def _checked(self, name: str, default: Any) -> Any:
        """The value, or ``ImproperlyConfigured`` in E008's words: never a silent guess at request time."""
        value = self._get(name, default)
        found = invalid(name, value)
        if found is not None:
            raise ImproperlyConfigured(" ".join(found))
        return value

    @property
    def ACCESS_TOKEN_EXPIRE_SECONDS(self) -> int | None:
        """Lifetime of exchanged access tokens; ``None`` means DOT's ``ACCESS_TOKEN_EXPIRE_SECONDS``.

        Whatever the value, an exchanged token never outlives its subject token.
        """
        value: int | None = self._checked("ACCESS_TOKEN_EXPIRE_SECONDS", None)
        return value

    @property
    def ID_TOKEN_EXPIRE_SECONDS(self) -> int | None:
        """Lifetime of ID tokens minted by an exchange; ``None`` means DOT's ``ID_TOKEN_EXPIRE_SECONDS``."""
        value: int | None = self._checked("ID_TOKEN_EXPIRE_SECONDS", None)
        return value

    @property
    def IMPERSONATION_TOKEN_EXPIRE_SECONDS(self) -> int:
        """Upper bound on the lifetime of impersonated tokens (default one hour).

        Whatever the value, an impersonated token never outlives its actor token.
        """
        return int(self._checked("IMPERSONATION_TOKEN_EXPIRE_SECONDS", 3600))

    @property
    def ADMIN_IMPERSONATION_MAX_SECONDS(self) -> int:
        """Longest impersonation a support user may start from the admin (default one hour).

        Tokens issued under it never outlive it, nor ``IMPERSONATION_TOKEN_EXPIRE_SECONDS``.
        """
        return int(self._checked("ADMIN_IMPERSONATION_MAX_SECONDS", 3600))

    @property
    def MAX_ACT_DEPTH(self) -> int:
        """How many actors one token may name, outermost ``act`` included (RFC 8693 §4.1 nesting)."""
        return int(self._checked("MAX_ACT_DEPTH", 4))

    @property
    def ORGANIZATION_MODEL(self) -> str:
        """``app_label.ModelName`` of the organizations impersonator grants are scoped to.

        Like ``AUTH_USER_MODEL``, choose it before the first ``migrate``. Read when the models are
        imported, before the app registry could tell an installed model: E008 and Django's own
        ``fields.E300`` report a wrong one.
        """
        return str(self._get("ORGANIZATION_MODEL", "auth.Group"))

    @property
    def USER_ORGANIZATIONS(self) -> Callable[[Any], Any]:
        """``callable(user)`` returning the primary keys of the user's organizations.

        Default: the user's groups (``token_exchange.impersonation.facts.user_groups``).
        """
        return self._callable("USER_ORGANIZATIONS", "token_exchange.impersonation.facts.user_groups")

    @property
    def IS_ADMIN_SUBJECT(self) -> Callable[[Any], bool]:
        """``callable(user)``: is this user an "admin" that only admin impersonators may impersonate?

        Default: staff, superusers and holders of any impersonator grant
        (``token_exchange.impersonation.facts.is_admin_subject``).
        """
        return self._callable("IS_ADMIN_SUBJECT", "token_exchange.impersonation.facts.is_admin_subject")

    @property
    def PRIVILEGED_URL_PREFIXES(self) -> tuple[str, ...] | None:
        """URL path prefixes where ``ImpersonationGuardMiddleware`` refuses impersonated tokens.

        ``None`` (the default) means the Django admin's prefix, when the admin is installed; an
        empty list guards no prefix.

        A value that is not a list or tuple of paths starting with ``/`` guards every path (E008
        says so at startup). The guard exists to keep impersonated tokens out, so when it cannot
        tell where the site meant, it keeps them out everywhere rather than guess: ``tuple()`` of
        ``"/admin/"`` would give ``"/"`` (every path) only by luck, of ``"admin/"`` no path at all,
        and reading ``"/admin/ /staff/"`` as one prefix would guard neither. Only bearer tokens
        carrying ``act`` are refused, so everyone else is unaffected.
        """
        value = self._get("PRIVILEGED_URL_PREFIXES", None)
        if invalid("PRIVILEGED_URL_PREFIXES", value) is not None:
            return ("/",)
        return None if value is None else tuple(value)

    @property
    def JWT_LEEWAY_SECONDS(self) -> int:
        """Clock skew tolerated on ``exp``, ``nbf`` and ``iat`` of JWTs a client signs (default 60)."""
        return int(self._checked("JWT_LEEWAY_SECONDS", 60))

    @property
    def REPLAY_CACHE(self) -> str:
        """The ``CACHES`` alias that remembers used ``jti`` values of client-signed JWTs.

        Default ``"default"``. Replay protection holds across processes only when this cache is
        shared by all of them (Redis, Memcached, the database cache); a per-process cache such
        as ``LocMemCache`` protects one process only.
        """
        return str(self._get("REPLAY_CACHE", "default"))

    @property
    def CLIENT_AUTHENTICATION(self) -> str:
        """Who verifies ``client_assertion``s (RFC 7523 ``private_key_jwt``): ``"token_exchange"``
        (the default: this package, against ``ClientKey`` rows) or ``"oauth2_provider"`` (DOT's
        own, against the application's ``client_jwks``/``client_jwks_uri``).

        ``token_exchange.jwt.client_assertion.ours`` is the one place that reads it.
        """
        return str(self._get("CLIENT_AUTHENTICATION", "token_exchange"))

    @property
    def THROTTLE_REFUSALS(self) -> int:
        """Refused token exchanges a client may have in one window before its further requests
        are answered 429 (default 100); ``0`` turns the throttle off. See ``token_exchange.throttle``.
        """
        return int(self._checked("THROTTLE_REFUSALS", 100))

    @property
    def THROTTLE_WINDOW_SECONDS(self) -> int:
        """The length of a throttle window (default 60 seconds)."""
        return int(self._checked("THROTTLE_WINDOW_SECONDS", 60))

    @property
    def THROTTLE_CACHE(self) -> str:
        """The ``CACHES`` alias that counts refusals per client (default ``"default"``); shared by
        all processes (Redis, Memcached), the limit holds for the site, else per process."""
        return str(self._checked("THROTTLE_CACHE", "default"))

    @property
    def RESOURCE_SERVER(self) -> ResourceServerSettings:
        """A separate resource server's view of its authorization server (``token_exchange.resource_server``):
        ``ISSUER`` (exact), ``RESOURCE_URI`` (this service's resource indicator, which must be in a
        token's ``aud``), ``JWKS_URI`` (``None``: ``ISSUER + "/.well-known/jwks.json"``),
        ``ALGORITHMS``, ``LEEWAY_SECONDS``, ``INTROSPECTION_CACHE_SECONDS``, ``CACHE`` and
        ``TIMEOUT_SECONDS``; missing keys take their defaults. See docs/resource-servers.md.
        """
        value = self._checked("RESOURCE_SERVER", {})
        merged: ResourceServerSettings = {**RESOURCE_SERVER_DEFAULTS, **value}
        merged["ALGORITHMS"] = list(merged["ALGORITHMS"])
        return merged

    @property
    def FEDERATION_CACHE(self) -> str:
        """The ``CACHES`` alias that holds trusted issuers' fetched JWKS and the fetch
        schedule (default ``"default"``). Shared by all processes (Redis, Memcached), an issuer
        is asked once per interval for the whole site; per process otherwise. See
        docs/federation.md."""
        return str(self._checked("FEDERATION_CACHE", "default"))

    @property
    def FEDERATION_TIMEOUT_SECONDS(self) -> int:
        """Seconds a trusted issuer's JWKS endpoint has for its whole answer (default 5)."""
        return int(self._checked("FEDERATION_TIMEOUT_SECONDS", 5))

    @property
    def FEDERATION_ALLOW_HTTP_LOOPBACK(self) -> bool:
        """Whether a trusted issuer's ``jwks_uri`` may be plain ``http`` on a loopback address
        (``127.0.0.1``, ``::1``, ``localhost``): for tests and development only (default False).

        .. warning:: Never in production: keys fetched over plain HTTP are keys anyone on the
           path can replace.
        """
        return bool(self._checked("FEDERATION_ALLOW_HTTP_LOOPBACK", False))

    @property
    def FEDERATION_RESOLVER(self) -> Callable[..., Any]:
        """Who a trusted issuer's verified token stands for here: a callable (or its dotted path)
        ``(trust, claims) -> user or None``; default ``token_exchange.federation.identities.resolve``
        (linked identities, then the issuer's email matching and user creation options)."""
        return self._callable("FEDERATION_RESOLVER", "token_exchange.federation.identities.resolve")

    @property
    def JWT_BEARER_MAX_LIFETIME_SECONDS(self) -> int:
        """The longest an assertion of the JWT authorization grant may live, ``exp`` minus
        ``iat`` (default 300), whatever its issuer's own maximum (RFC 7523 §3)."""
        return int(self._checked("JWT_BEARER_MAX_LIFETIME_SECONDS", 300))

    @property
    def JWT_BEARER_REFRESH_TOKENS(self) -> bool:
        """Whether the JWT authorization grant issues refresh tokens (with ``offline_access``);
        default False: the client comes back with a fresh assertion."""
        return bool(self._checked("JWT_BEARER_REFRESH_TOKENS", False))

    def _callable(self, name: str, default: str) -> Callable[..., Any]:
        value = self._checked(name, default)
        return import_string(value) if isinstance(value, str) else value  # type: ignore[no-any-return]


_LIFETIME = f"an integer of seconds from 1 to {_YEAR} (366 days)"
_CALLABLE = "a callable or its dotted path"
SETTINGS: dict[str, Setting] = {
    "ACCESS_TOKEN_EXPIRE_SECONDS": Setting(f"{_LIFETIME} or None", "300", _int_from(1, _YEAR, or_none=True)),
    "ID_TOKEN_EXPIRE_SECONDS": Setting(f"{_LIFETIME} or None", "300", _int_from(1, _YEAR, or_none=True)),
    "IMPERSONATION_TOKEN_EXPIRE_SECONDS": Setting(_LIFETIME, "600", _LIFETIME_RULE),
    "ADMIN_IMPERSONATION_MAX_SECONDS": Setting(_LIFETIME, "1800", _LIFETIME_RULE),
    "MAX_ACT_DEPTH": Setting("an integer from 1 to 16", "4", _int_from(1, 16)),
    "ORGANIZATION_MODEL": Setting(
        "'app_label.ModelName' of an installed model", "'auth.Group'", _model_label
    ),
    "USER_ORGANIZATIONS": Setting(
        _CALLABLE, "'token_exchange.impersonation.facts.user_groups'", _callable_or_path
    ),
    "IS_ADMIN_SUBJECT": Setting(
        _CALLABLE, "'token_exchange.impersonation.facts.is_admin_subject'", _callable_or_path
    ),
    "PRIVILEGED_URL_PREFIXES": Setting(
        "a list or tuple of URL path prefixes, or None", "['/admin/']", _url_prefixes
    ),
    "JWT_LEEWAY_SECONDS": Setting("an integer of seconds from 0 to 300", "60", _int_from(0, 300)),
    "REPLAY_CACHE": Setting("a CACHES alias (a string)", "'default'", _string),
    # A ceiling keeps "off" spelled 0, not 10**9; a window past a day throttles a client that
    # was refused twice a week.
    "THROTTLE_REFUSALS": Setting("an integer from 0 (off) to 1000000", "100", _int_from(0, 1_000_000)),
    "THROTTLE_WINDOW_SECONDS": Setting("an integer of seconds from 1 to 86400", "60", _int_from(1, 86_400)),
    "THROTTLE_CACHE": Setting("a CACHES alias (a string)", "'default'", _string),
    "CLIENT_AUTHENTICATION": Setting(
        "'token_exchange' or 'oauth2_provider'",
        "'token_exchange'",
        _one_of("token_exchange", "oauth2_provider"),
    ),
    "FEDERATION_CACHE": Setting("a CACHES alias (a string)", "'default'", _string),
    "FEDERATION_TIMEOUT_SECONDS": Setting("an integer of seconds from 1 to 30", "5", _int_from(1, 30)),
    "FEDERATION_ALLOW_HTTP_LOOPBACK": Setting("True or False", "False", _boolean),
    "FEDERATION_RESOLVER": Setting(
        _CALLABLE, "'token_exchange.federation.identities.resolve'", _callable_or_path
    ),
    "JWT_BEARER_MAX_LIFETIME_SECONDS": Setting(
        "an integer of seconds from 1 to 3600", "300", _int_from(1, 3600)
    ),
    "JWT_BEARER_REFRESH_TOKENS": Setting("True or False", "False", _boolean),
    "RESOURCE_SERVER": Setting(
        "a dict of resource server settings (docs/resource-servers.md)",
        "{'ISSUER': 'https://id.example.com/o', 'RESOURCE_URI': 'https://api.example.com/'}",
        _resource_server,
    ),
}
"""Every key of ``TOKEN_EXCHANGE``, one per property of ``TokenExchangeSettings``."""

token_exchange_settings = TokenExchangeSettings()
