"""Pure decisions of the token exchange grant.

Every function here takes plain values and returns a value or raises a ``Refusal`` with a
reason code; none reads the database, the request or the settings. The grant gathers the
inputs, these functions decide, and ``minting`` carries the decision out.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable

from .constants import ID_TOKEN_TYPE, OFFLINE_ACCESS, OPENID
from .exceptions import InvalidSubjectToken, ScopeRefusal, TargetRefusal


def may_present(*, client_id: str, token_client_id: str, token_audience: Iterable[str]) -> bool:
    """A client may exchange a token issued to it, or one whose audience names it (RFC 8693 §2.1)."""
    return client_id == token_client_id or client_id in token_audience


def resolve_scope(
    *,
    requested: frozenset[str],
    subject_scope: frozenset[str],
    client_scopes: frozenset[str],
) -> frozenset[str]:
    """The scope of the issued token: never wider than the subject token's or the client's.

    An empty request means "the subject's scope", less what the client may not hold.
    """
    if not requested:
        granted = subject_scope & client_scopes
        if not granted:
            raise ScopeRefusal("no_scope_left")
        return granted
    if not requested <= subject_scope:
        raise ScopeRefusal("scope_exceeds_subject")
    if not requested <= client_scopes:
        raise ScopeRefusal("scope_not_allowed_for_client")
    return requested


def resolve_audience(*, requested: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The audience of the issued token: exactly what was asked for, or else ``allowed``.

    Every requested ``audience`` and ``resource`` value must already be in the audience of the
    presented tokens: an exchange can narrow the audience, never widen it.
    """
    if not requested:
        return allowed
    if any(value not in allowed for value in requested):
        raise TargetRefusal("audience_exceeds_subject")
    return tuple(dict.fromkeys(requested))


def lifetime_seconds(*, now: datetime.datetime, default_seconds: int, not_after: datetime.datetime) -> int:
    """Seconds the issued token lives: the configured lifetime, cut at the subject's expiry."""
    seconds = min(default_seconds, int((not_after - now).total_seconds()))
    if seconds <= 0:
        raise InvalidSubjectToken("expired_token")
    return seconds


def issues_refresh_token(*, requested_token_type: str, scope: frozenset[str]) -> bool:
    """A refresh token only with ``offline_access``, and never beside a requested ID token."""
    return OFFLINE_ACCESS in scope and requested_token_type != ID_TOKEN_TYPE


def issues_id_token(*, requested_token_type: str, scope: frozenset[str]) -> bool:
    """An ``id_token`` field with ``openid``, unless the ID token already is the ``access_token``."""
    return OPENID in scope and requested_token_type != ID_TOKEN_TYPE
