"""What a resource server knows after verifying an access token: one value for both modes.

A separate resource server has no row for the token and no user table of the authorization
server, so it gets a :class:`VerifiedAccessToken` (``request.auth`` in DRF, ``request.access_token``
in DOT's introspection mode) and a :class:`TokenUser` (``request.user``). Both are built only
from what the issuer signed (RFC 9068) or said when asked (RFC 7662), after the checks of
``jwt_access_token`` or ``introspection``; nothing here checks anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from oauthlib.oauth2.rfc6749 import errors

logger = logging.getLogger("token_exchange")

# What a client is told (RFC 6750 §3 error_description): which kind of refusal, never why.
INVALID = "The access token is invalid."
EXPIRED = "The access token has expired."
NOT_FOR_US = "The access token is not meant for this resource server."
UNVERIFIABLE = "The access token cannot be verified now."

# 9999-12-31T23:59:59Z, the last second a datetime holds: an exp beyond it is no expiry time,
# and integer arithmetic on it (cache timeouts) must stay within what floats and datetimes hold.
MAX_EXP = 253_402_300_799


class InvalidToken(errors.InvalidTokenError):  # type: ignore[misc]
    """RFC 6750 §3.1 ``invalid_token`` (401): expired, revoked, malformed, foreign or unverifiable.

    ``description`` is for the client's ``WWW-Authenticate`` header: it never holds the token, and
    says no more than which of a few kinds of refusal it was; the precise reason goes to the log.
    """


@dataclass(frozen=True)
class VerifiedAccessToken:
    """A verified access token, by the claims of RFC 9068 §2.2 and RFC 8693 §4.1 (``act``).

    Offers what DOT's ``AccessToken`` offers its DRF permissions (``scope``, ``is_valid``,
    ``allow_scopes``, ``is_expired``), so ``TokenHasScope`` and ``TokenHasReadWriteScope`` work on
    it unchanged. ``act`` is authoritative for the request: ``token_exchange.impersonation.guard.get_actor``
    reads it first, so ``NotImpersonated`` and ``refuse_impersonated`` refuse on it.
    """

    iss: str
    sub: str
    client_id: str
    scope: str
    aud: tuple[str, ...]
    act: dict[str, Any] | None = field(default=None, hash=False)
    exp: int = 0
    jti: str = ""
    claims: dict[str, Any] = field(default_factory=dict, hash=False, repr=False, compare=False)
    # The clock skew the verification allowed on exp: is_expired() keeps to the same rule, so a
    # token accepted at authentication is not "expired" to a permission a millisecond later.
    leeway: int = field(default=0, repr=False, compare=False)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The scope names (DOT's ``AccessToken.scopes`` maps them to descriptions, which only the
        authorization server knows; ``list(token.scopes)`` is the same in both)."""
        return tuple(self.scope.split())

    def is_expired(self) -> bool:
        return time.time() >= self.exp + self.leeway

    def allow_scopes(self, scopes: Iterable[str] | None) -> bool:
        if not scopes:
            return True
        return set(scopes).issubset(self.scopes)

    def is_valid(self, scopes: Iterable[str] | None = None) -> bool:
        return not self.is_expired() and self.allow_scopes(scopes)


class TokenUser:
    """``request.user`` of a resource server: the token's subject, not a database row.

    ``pk``/``id`` are the ``sub`` claim (a string: the authorization server's user id), and
    ``username`` is the introspection answer's ``username`` where there is one, else ``sub``. It
    is authenticated and active, never staff or superuser, and holds no permissions and no
    groups: what it may do is the token's ``scope`` and audience, which the authorization server
    decided. Nothing is written to the resource server's user table (DOT's introspection mode
    creates a local user per username; this does not).
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, sub: str, username: str | None = None) -> None:
        self.pk = self.id = sub
        self.username = username or sub

    @property
    def groups(self) -> Any:
        """No groups, as Django's ``AnonymousUser``: ``user.groups.filter(...)`` is empty, not a 500."""
        from django.contrib.auth.models import Group  # models: only once the apps are loaded
        from django.db.models.manager import EmptyManager

        return EmptyManager(Group)

    @property
    def user_permissions(self) -> Any:
        """No permissions, as Django's ``AnonymousUser``."""
        from django.contrib.auth.models import Permission
        from django.db.models.manager import EmptyManager

        return EmptyManager(Permission)

    def get_username(self) -> str:
        return self.username

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"<TokenUser sub={self.pk!r}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, TokenUser) and other.pk == self.pk

    def __hash__(self) -> int:
        return hash(self.pk)

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def has_perms(self, perm_list: Iterable[str], obj: Any = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False

    def get_all_permissions(self, obj: Any = None) -> set[str]:
        return set()


def token_user(token: VerifiedAccessToken) -> TokenUser | None:
    """The token's subject as ``request.user``; ``None`` for a token without ``sub`` (a client
    acting for itself, as DOT's introspection mode leaves it)."""
    if not token.sub:
        return None
    username = token.claims.get("username")
    return TokenUser(token.sub, username if isinstance(username, str) else None)


def from_claims(claims: dict[str, Any], *, leeway: int) -> VerifiedAccessToken:
    """A :class:`VerifiedAccessToken` of claims already checked by the caller (iss, aud, exp).

    Refuses claims of the wrong type, rather than guess: an ``act`` that is not an object could
    hide an actor from the guard.
    """
    aud = claims.get("aud", [])
    audience = (aud,) if isinstance(aud, str) else tuple(aud) if isinstance(aud, list) else None
    act = claims.get("act")
    exp = claims.get("exp")
    checks = {
        "aud": audience is not None and all(isinstance(entry, str) for entry in audience),
        "act": act is None or isinstance(act, dict),
        "sub": isinstance(claims.get("sub", ""), str),
        "client_id": isinstance(claims.get("client_id", ""), str),
        "scope": isinstance(claims.get("scope", ""), str),
        "jti": isinstance(claims.get("jti", ""), str),
        "exp": isinstance(exp, int) and not isinstance(exp, bool) and 0 < exp <= MAX_EXP,
    }
    wrong = [name for name, fine in checks.items() if not fine]
    if wrong:
        logger.info("Access token refused: claims of the wrong type: %s", ", ".join(wrong))
        raise InvalidToken(description=INVALID)
    return VerifiedAccessToken(
        iss=str(claims.get("iss", "")),
        sub=str(claims.get("sub", "")),
        client_id=str(claims.get("client_id", "")),
        scope=str(claims.get("scope", "")),
        aud=audience or (),
        act=act,
        exp=int(claims["exp"]),
        jti=str(claims.get("jti", "")),
        claims=dict(claims),
        leeway=leeway,
    )
