"""Errors of the token exchange grant.

Protocol errors are oauthlib ``OAuth2Error`` classes, so oauthlib and DOT render them as the
RFC 6749 §5.2 JSON body. Nobody builds error JSON by hand.

A :class:`Refusal` is internal: readers and policy raise it with a reason code that goes to the
log and to the audit row. The grant turns it into the OAuth error it names, with a generic
description: the client learns *that* the request was refused, never *why*.

Every refusal about the presented tokens and the users they name reads exactly the same to the
client (400, ``invalid_request``, :data:`REFUSED`): a subject token or an actor token, unknown,
malformed, expired, revoked or foreign, a user id that names nobody, an inactive user, a
superuser, someone of another organization or anyone else the actor may not act for. A
description per token ("The subject_token is invalid." against "The actor_token is invalid.")
told a client with a garbage actor token which user ids exist and are active, since the subject
is read first; so :class:`InvalidSubjectToken` and :class:`InvalidActorToken` differ only in the
log. Which check runs first must not tell either: see ``TokenExchangeGrant.decide``.
"""

from __future__ import annotations

from typing import Any

from oauthlib.oauth2.rfc6749 import errors


class InvalidTargetError(errors.OAuth2Error):  # type: ignore[misc]
    """RFC 8693 §2.2.2 / RFC 8707 §2: an audience or resource the server will not issue for."""

    error = "invalid_target"


REFUSED = "The request was refused."
"""The one description of every refusal about presented tokens and users (RFC 8693 §2.2.2: "if
either the subject_token or actor_token are invalid for any reason, or are unacceptable based on
policy", ``invalid_request``)."""


class Refusal(Exception):
    """A request refused for a reason the client is not told."""

    error_class: type[errors.OAuth2Error] = errors.InvalidRequestError
    description = REFUSED
    parameter: str | None = None  # the request parameter it is about, for the log only

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        # A trusted issuer's verified token refused for whom it names: {"iss", "sub"}, for the
        # audit row (token_exchange.tokens.external).
        self.external: dict[str, str] | None = None
        # A trusted issuer's verified token refused for whom it names: the VerifiedToken of what
        # it says besides (scope, audience), so the terms can be decided first (the grant).
        self.presented: Any = None

    def as_oauth2_error(self) -> errors.OAuth2Error:
        return self.error_class(description=self.description)


class InvalidSubjectToken(Refusal):
    """The subject_token, or the user it names, is refused; the client reads :data:`REFUSED`."""

    parameter = "subject_token"


class InvalidActorToken(Refusal):
    """The actor_token, or its user, is refused; the client reads :data:`REFUSED` all the same."""

    parameter = "actor_token"


class ScopeRefusal(Refusal):
    error_class = errors.InvalidScopeError
    description = "The requested scope is invalid, unknown, or exceeds the scope of the presented tokens."


class TargetRefusal(Refusal):
    error_class = InvalidTargetError
    description = "The requested audience or resource is not within the audience of the presented tokens."


class TooManyRefusals(errors.TemporarilyUnavailableError):  # type: ignore[misc]
    """429: the client was refused too often in this window (``token_exchange.throttle``).

    RFC 6749 §5.2 lists no token endpoint error for "slow down"; RFC 8628's ``slow_down`` means
    "keep polling the device code, slower", and a private code (Auth0's ``too_many_attempts``)
    means nothing to a generic client library. ``temporarily_unavailable`` (RFC 6749
    §4.1.2.1, registered for the authorization endpoint) already says "unable to handle the
    request now, try later", and libraries treat it as retryable; the status 429 and
    ``Retry-After`` (RFC 6585 §4, RFC 9110 §10.2.3) say exactly how long.
    """

    status_code = 429

    def __init__(self, *, retry_after: int) -> None:
        super().__init__(description="Too many refused requests from this client; retry later.")
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ReplayStoreUnavailable(errors.TemporarilyUnavailableError):  # type: ignore[misc]
    """503: the replay store (``REPLAY_CACHE``) could not say whether a ``jti`` was used before.

    Raised by ``replay.consume`` when the cache does not answer (Redis down, a missing alias) or
    cannot remember (``DummyCache``). One-time use cannot be promised, so the JWT is not accepted
    (fail closed); but nothing is wrong with the client's credentials or its request, so the
    answer is not ``invalid_client`` or ``invalid_request``: it is the server's trouble, and the
    client may retry, with a fresh JWT. ``temporarily_unavailable`` with 503 and ``Retry-After``,
    as for a database that failed a token request (``views._nothing_issued``).
    """

    status_code = 503
    reason = "replay_store_unavailable"
    """The audit reason of a token exchange refused for it (``grant.TokenExchangeGrant.exchange``)."""
    RETRY_AFTER_SECONDS = 5
    """A cache that is down is seldom back within a second; every retry costs a connection attempt."""

    def __init__(self) -> None:
        super().__init__(
            description="The signed JWT could not be checked now. Try again later, with a newly signed JWT."
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.RETRY_AFTER_SECONDS)}
