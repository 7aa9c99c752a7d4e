"""Errors of the token exchange grant.

Protocol errors are oauthlib ``OAuth2Error`` classes, so oauthlib and DOT render them as the
RFC 6749 §5.2 JSON body. Nobody builds error JSON by hand.

A :class:`Refusal` is internal: readers and policy raise it with a reason code that goes to the
log (and, with the impersonation work, to the audit trail). The grant turns it into the OAuth
error it names, with a generic description: the client learns *that* a token was refused, never
*why*, so a probing client cannot tell an unknown token from a revoked or foreign one.
"""

from __future__ import annotations

from oauthlib.oauth2.rfc6749 import errors


class InvalidTargetError(errors.OAuth2Error):  # type: ignore[misc]
    """RFC 8693 §2.2.2 / RFC 8707 §2: an audience or resource the server will not issue for."""

    error = "invalid_target"


class Refusal(Exception):
    """A request refused for a reason the client is not told."""

    error_class: type[errors.OAuth2Error] = errors.InvalidRequestError
    description = "The request was refused."

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def as_oauth2_error(self) -> errors.OAuth2Error:
        return self.error_class(description=self.description)


class InvalidSubjectToken(Refusal):
    description = "The subject_token is invalid."


class InvalidActorToken(Refusal):
    description = "The actor_token is invalid."


class ScopeRefusal(Refusal):
    error_class = errors.InvalidScopeError
    description = "The requested scope is invalid, unknown, or exceeds the scope of the presented tokens."


class TargetRefusal(Refusal):
    error_class = InvalidTargetError
    description = "The requested audience or resource is not within the audience of the presented tokens."
