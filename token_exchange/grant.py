"""The RFC 8693 token exchange grant, as an oauthlib grant type.

Reads the request, authenticates the client, asks the readers to verify the presented tokens,
asks the policy what may be issued and hands the decision to minting. It runs no SQL of its own
beyond what those modules do, and it is the only place that turns a ``Refusal`` into an OAuth
error, so every refusal is logged in one way.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from oauth2_provider.oauth2_validators import is_valid_resource_uri
from oauth2_provider.scopes import get_scopes_backend
from oauth2_provider.settings import oauth2_settings
from oauthlib.common import Request
from oauthlib.oauth2.rfc6749 import errors
from oauthlib.oauth2.rfc6749.grant_types.base import GrantTypeBase

from token_exchange import policy, throttle
from token_exchange.conf import token_exchange_settings
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    ACTOR_ONLY_SUBJECT_TYPES,
    ACTOR_TOKEN_TYPES,
    FORM_CONTENT_TYPE,
    GRANT_TYPE,
    ID_TOKEN_TYPE,
    JWT_TYPE,
    KNOWN_TOKEN_TYPES,
    OPENID,
    REFRESH_TOKEN_TYPE,
    REPEATABLE_PARAMETERS,
    REQUESTABLE_TOKEN_TYPES,
)
from token_exchange.exceptions import (
    InvalidActorToken,
    InvalidSubjectToken,
    InvalidTargetError,
    Refusal,
    ReplayStoreUnavailable,
    ScopeRefusal,
)
from token_exchange.federation.assertion import unverified_issuer
from token_exchange.impersonation import decision as impersonation_decision
from token_exchange.impersonation import sessions as impersonation_sessions
from token_exchange.issuance import audit, lineage
from token_exchange.issuance.minting import Issuance, mint
from token_exchange.models import ClientPolicy, SecuritySettings
from token_exchange.tokens import VerifiedToken, read_token, registry

logger = logging.getLogger("token_exchange")

# Far above any token this server issues (a JWT with a deep act chain is a few KB), far below
# anything that would make hashing or JSON parsing expensive.
MAX_TOKEN_LENGTH = 16 * 1024

# Parameters that carry credentials: they must never travel in a URL (RFC 9700 §4.3.2).
_BODY_ONLY = frozenset({"subject_token", "actor_token", "client_secret", "client_assertion", "assertion"})


@dataclass(frozen=True)
class Terms:
    """What the rules allow the issued tokens to be: scope, target, ``act`` and latest expiry."""

    scope: frozenset[str]
    audience: tuple[str, ...]
    resource: tuple[str, ...]
    act: dict[str, Any] | None
    not_after: datetime.datetime | None


@dataclass(frozen=True)
class PresentedClaims:
    """What a presented subject says besides whom it names: all the terms are built from.

    A subject that only names a user (a user id, a client-signed JWT) says nothing else: no
    scope, audience, expiry or ``act`` of its own. Its claims are :meth:`named`, the same for
    every user, so the terms cannot tell one user from another (see ``decide``).
    """

    token_type: str
    scope: frozenset[str]
    audience: tuple[str, ...]
    resource: tuple[str, ...]
    expires: datetime.datetime | None
    act: dict[str, Any] | None
    impersonation_id: int | None
    default_audience: tuple[str, ...] | None = None

    @classmethod
    def of(cls, token: VerifiedToken | None) -> PresentedClaims:
        assert token is not None
        return cls(
            token_type=token.token_type,
            scope=token.scope,
            audience=token.audience,
            resource=token.resource,
            expires=token.expires,
            act=token.act,
            impersonation_id=token.impersonation_id,
            default_audience=token.default_audience,
        )

    @classmethod
    def named(cls, token_type: str) -> PresentedClaims:
        return cls(
            token_type=token_type,
            scope=frozenset(),
            audience=(),
            resource=(),
            expires=None,
            act=None,
            impersonation_id=None,
        )


@dataclass(frozen=True)
class ExchangeParameters:
    """The RFC 8693 §2.1 request parameters, checked for shape but not yet for meaning."""

    subject_token: str
    subject_token_type: str
    actor_token: str | None
    actor_token_type: str | None
    requested_token_type: str
    scope: frozenset[str]
    audience: tuple[str, ...]
    resource: tuple[str, ...]

    @property
    def target(self) -> tuple[str, ...]:
        """RFC 8693 §2.1: audience and resource together name where the token will be used."""
        return tuple(dict.fromkeys([*self.audience, *self.resource]))


def _invalid_request(description: str) -> errors.InvalidRequestError:
    return errors.InvalidRequestError(description=description)


# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ), separated by %x20 alone.
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")


def parse_scope(value: str | None) -> frozenset[str]:
    """The scope parameter as a set, split at spaces (``%x20``) only.

    ``str.split()`` would also split at tabs, line breaks and Unicode spaces (U+3000, U+00A0),
    turning ``read\u3000write`` into ``read write``: a token the client never asked for in the
    protocol's grammar. oauthlib's ``scope_to_list`` (DOT's other grants) splits at ``" "`` but
    first ``strip()``s every Unicode space off the ends. Here runs of spaces are tolerated, and any
    other character outside the grammar is ``invalid_scope``, as an unknown scope would be.
    """
    tokens = frozenset(token for token in (value or "").split(" ") if token)
    if any(not _SCOPE_TOKEN.fullmatch(token) for token in tokens):
        raise ScopeRefusal("malformed_scope")
    return tokens


ACTOR_ONLY = "This subject_token_type is only accepted together with an actor_token."


def parse_parameters(request: Request, *, client_id: str | None = None) -> ExchangeParameters:
    """Read the form body into :class:`ExchangeParameters` or raise ``invalid_request``.

    ``client_id``: the authenticated client's, to tell its own subject JWT (only beside an actor)
    from a trusted issuer's (the grant decides whose it is, ``registry.route``)."""
    body: list[tuple[str, str]] = list(request.decoded_body or [])
    values: dict[str, list[str]] = {}
    for key, value in body:
        values.setdefault(key, []).append(value)

    def single(name: str, *, required: bool = False) -> str | None:
        found = values.get(name, [])
        if not found or found == [""]:
            if required:
                raise _invalid_request(f"Missing {name} parameter.")
            return None
        return found[0]

    subject_token = single("subject_token", required=True)
    subject_token_type = single("subject_token_type", required=True)
    actor_token = single("actor_token")
    actor_token_type = single("actor_token_type")
    requested_token_type = single("requested_token_type") or ACCESS_TOKEN_TYPE
    assert subject_token is not None
    assert subject_token_type is not None

    for token in (subject_token, actor_token):
        if token is not None and len(token) > MAX_TOKEN_LENGTH:
            raise _invalid_request("A token parameter is too long.")
    for token_type in (subject_token_type, actor_token_type, requested_token_type):
        if token_type is not None and token_type not in KNOWN_TOKEN_TYPES:
            raise _invalid_request("Unsupported token type.")
    if (actor_token is None) != (actor_token_type is None):
        raise _invalid_request("actor_token and actor_token_type must be sent together.")
    if subject_token_type == REFRESH_TOKEN_TYPE or actor_token_type == REFRESH_TOKEN_TYPE:
        raise _invalid_request("Refresh tokens cannot be exchanged; use the refresh_token grant.")
    if actor_token_type is not None and actor_token_type not in ACTOR_TOKEN_TYPES:
        raise _invalid_request("Unsupported actor_token_type.")
    if subject_token_type in ACTOR_ONLY_SUBJECT_TYPES and actor_token is None:
        # A JWT naming an issuer other than the client may be a trusted issuer's: the grant
        # decides (registry.route). The client's own, or a user id, needs an actor.
        iss = unverified_issuer(subject_token) if subject_token_type == JWT_TYPE else None
        if iss is None or iss == client_id:
            raise _invalid_request(ACTOR_ONLY)
    if requested_token_type not in REQUESTABLE_TOKEN_TYPES:
        raise _invalid_request("Unsupported requested_token_type.")

    resource = tuple(values.get("resource", []))
    if any(not is_valid_resource_uri(value) for value in resource):
        raise InvalidTargetError(description="A resource is not an absolute URI without a fragment.")
    audience = tuple(values.get("audience", []))
    if any(not value for value in audience):
        raise InvalidTargetError(description="An audience value is empty.")

    return ExchangeParameters(
        subject_token=subject_token,
        subject_token_type=subject_token_type,
        actor_token=actor_token,
        actor_token_type=actor_token_type,
        requested_token_type=requested_token_type,
        scope=parse_scope(single("scope")),
        audience=audience,
        resource=resource,
    )


def client_resources(client: Any) -> tuple[str, ...]:
    """The resource URIs the client serves, from its policy (loaded with the client)."""
    client_policy: ClientPolicy | None = getattr(client, "token_exchange_policy", None)
    return tuple(client_policy.resource_uris or ()) if client_policy is not None else ()


class TokenExchangeGrant(GrantTypeBase):  # type: ignore[misc]
    """``grant_type=urn:ietf:params:oauth:grant-type:token-exchange`` (RFC 8693 §2)."""

    def create_token_response(self, request: Request, token_handler: Any) -> tuple[dict[str, str], str, int]:
        # RFC 6749 §5.1: a JSON answer no cache keeps (as oauthlib's other grants answer).
        headers = {"Content-Type": "application/json", "Cache-Control": "no-store", "Pragma": "no-cache"}
        try:
            response = self.exchange(request, token_handler)
        except errors.OAuth2Error as error:
            headers.update(error.headers)
            return headers, error.json, error.status_code
        return headers, json.dumps(response), 200

    # The steps, in the order RFC 6749 §5.2 lets a client learn about its mistakes.

    grant_type = GRANT_TYPE
    # The parameter a client-signed JWT read after the client's authentication arrives in.
    signed_jwt_parameter = "subject_token"

    def exchange(self, request: Request, token_handler: Any) -> dict[str, Any]:
        if request.grant_type != self.grant_type:
            raise errors.UnsupportedGrantTypeError()
        self.check_request_shape(request)
        # A replay store that cannot check the client assertion's jti: 503 from here, with no
        # audit row (the client is not authenticated, so there is nobody to attribute it to).
        client = self.authenticate_client(request)
        # Read with the client, in its statement. Only an authenticated client learns that the
        # instance switched token exchange off; like a refusal before authentication, not audited.
        security = SecuritySettings.of(client)
        if not security.token_exchange_enabled:
            raise errors.UnsupportedGrantTypeError(description="Token exchange is disabled.")
        # From here on the client is known: every refusal is logged, audited and counted.
        context = audit.AuditContext(
            application=client, client_ip=audit.client_ip(request.headers), grant_type=self.grant_type
        )
        context.note_types(request.decoded_body or [])
        # Outside the try: a 429 is no refusal of its own (not audited, not counted).
        throttle.check(context)
        try:
            self.check_client_policy(client)
            issuance = self.issuance(request, client, security, context)
            return self.response(
                mint(
                    issuance,
                    new_access_token=lambda: str(token_handler.token_generator(request)),
                    new_refresh_token=lambda: str(token_handler.refresh_token_generator(request)),
                )
            )
        except Refusal as refusal:
            context.external = refusal.external or context.external
            self.refuse(context, refusal.reason, refusal.error_class.error, parameter=refusal.parameter)
            raise refusal.as_oauth2_error() from refusal
        except ReplayStoreUnavailable as unavailable:
            # The replay store did not answer about a self-signed subject JWT: the only
            # client-signed JWT read in here (the client assertion was checked above, an actor
            # token is never one). The trail says so, not "replayed_jti", and it is not the
            # client's misbehaviour: not counted toward the throttle. 503, the client may retry.
            self.refuse(
                context,
                unavailable.reason,
                unavailable.error,
                parameter=self.signed_jwt_parameter,
                counted=False,
            )
            raise
        except errors.OAuth2Error as error:
            self.refuse(context, error.error, error.error)
            raise

    def issuance(
        self, request: Request, client: Any, security: SecuritySettings, context: audit.AuditContext
    ) -> Issuance:
        """What to issue, decided: RFC 8693's parameters, read and judged."""
        params = parse_parameters(request, client_id=client.client_id)
        return self.decide(request, client, params, security, context)

    def response(self, minted: dict[str, Any]) -> dict[str, Any]:
        return minted

    def refuse(
        self,
        context: audit.AuditContext,
        reason: str,
        error: str,
        *,
        parameter: str | None = None,
        counted: bool = True,
    ) -> None:
        """Log the precise reason (and which token it was about), audit it, count it (unless the
        refusal is the server's trouble, not the client's: ``counted=False``)."""
        where = f" ({parameter})" if parameter else ""
        logger.info(
            "Token exchange refused for client %s: %s%s", context.application.client_id, reason, where
        )
        audit.refused(context, reason=reason, error=error, parameter=parameter)
        if counted:
            throttle.refused(context)

    def check_request_shape(self, request: Request) -> None:
        content_type = str(request.headers.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if content_type != FORM_CONTENT_TYPE:
            # RFC 8693 §2.1: "using the application/x-www-form-urlencoded format".
            raise _invalid_request(f"Send the parameters as {FORM_CONTENT_TYPE}.")
        duplicates = set(request.duplicate_params) - REPEATABLE_PARAMETERS
        if duplicates:
            raise _invalid_request(f"Duplicate {sorted(duplicates)[0]} parameter.")
        if _BODY_ONLY & {key for key, _value in request.uri_query_params}:
            raise _invalid_request("Credentials and tokens must be sent in the request body.")

    def authenticate_client(self, request: Request) -> Any:
        """Only confidential clients that authenticate may exchange."""
        if not self.request_validator.authenticate_client(request):
            raise errors.InvalidClientError(description="Client authentication failed.")
        client = request.client
        if client.client_type != client.CLIENT_CONFIDENTIAL:
            # ZITADEL's guide warns against it; we refuse it: a leaked token plus a public
            # client_id must never be enough to mint new tokens.
            raise errors.InvalidClientError(description="Public clients cannot use token exchange.")
        request.client_id = client.client_id
        return client

    def check_client_policy(self, client: Any) -> None:
        # Loaded with the client (validator._load_application); a client without one has none.
        policy: ClientPolicy | None = getattr(client, "token_exchange_policy", None)
        if policy is None or not policy.token_exchange_enabled:
            raise errors.UnauthorizedClientError(
                description="This client is not allowed to use token exchange."
            )

    def decide(
        self,
        request: Request,
        client: Any,
        params: ExchangeParameters,
        security: SecuritySettings,
        context: audit.AuditContext,
    ) -> Issuance:
        """Read the tokens, build the terms, apply the rules: in an order that tells nothing.

        Every refusal about a token or a user reads the same to the client (``exceptions``), so
        which of two tokens is read first does not matter. What would still leak is a *different*
        error that can only happen once a user-dependent check passed: with a valid actor token
        and a scope it lacks, ``invalid_scope`` for a customer the actor may impersonate against
        ``invalid_request`` for anyone else (unknown, inactive, a superuser, of another
        organization) maps the users as well as any description did. So:

        1. the tokens that carry claims are read (a subject access or ID token, the actor token);
           a subject that merely *names* a user (a user id, a client-signed JWT) is read too, for
           the audit row, but its refusal waits;
        2. the terms (scope, audience, ``act`` depth, the requested token type) are built from
           the claims alone: a named subject carries none (no scope, audience or expiry of its
           own), so ``invalid_scope`` and ``invalid_target`` are answered the same whoever it
           names;
        3. then the waiting refusal of a named subject (or of a trusted issuer's token refused for
           whom it names: unlinked, inactive, an admin), and the rules about users (who may act
           for whom, ``may_act``, an ended admin-started impersonation), all as :data:`REFUSED`.

        A subject access or ID token is refused before its terms: the client holds it, and a
        token that names an unknown or inactive user is simply invalid. The only user-dependent
        answer left is success itself, which the rules exist to decide.
        """
        issuer = self.request_validator.get_oidc_issuer_endpoint(request)
        context.issuer = issuer
        if params.actor_token is not None and not security.allow_impersonation:
            # Before any token is read: with the switch off, nothing about them is revealed.
            raise Refusal("impersonation_disabled")

        # 1. The tokens. A trusted issuer's token (token_exchange.federation) is a subject only,
        # exchanged without an actor: the impersonation rules are about this server's users
        # acting for each other, with tokens this server issued.
        external = registry.is_external(
            params.subject_token_type,
            params.subject_token,
            issuer=issuer,
            client_id=client.client_id,
            beside_actor=params.actor_token is not None,
        )
        if external and params.actor_token is not None:
            raise InvalidSubjectToken("external_subject_with_actor")
        named = params.subject_token_type in ACTOR_ONLY_SUBJECT_TYPES and not external
        if named and params.actor_token is None:
            raise _invalid_request(ACTOR_ONLY)
        subject: VerifiedToken | None = None
        waiting: InvalidSubjectToken | None = None
        try:
            # A subject JWT whose jti the replay store cannot check raises ReplayStoreUnavailable
            # (503) here, before its sub is read: the answer says nothing about whom it names.
            subject = self.read_subject(params, client, issuer, context, external=external)
        except InvalidSubjectToken as refusal:
            if not named and refusal.presented is None:
                raise
            waiting = refusal
        actor = self.read_actor(params, client, issuer, context) if params.actor_token is not None else None

        # 2. The terms, from claims only.
        if named:
            claims = PresentedClaims.named(params.subject_token_type)
        else:
            # A trusted issuer's token refused for whom it names: what it says besides.
            presented = subject if subject is not None else waiting.presented if waiting is not None else None
            claims = PresentedClaims.of(presented)
        # The readers of named subjects promise it; the terms must not depend on whom they name.
        assert subject is None or PresentedClaims.of(subject) == claims
        client_scopes = frozenset(
            get_scopes_backend().get_available_scopes(application=client, request=request)
        )
        if actor is None:
            terms = self.exchange_terms(params, claims, client_scopes)
        else:
            terms = self.impersonation_terms(params, claims, actor, client_scopes, issuer)
        scope = terms.scope
        requested = params.requested_token_type
        issue_id_token = policy.issues_id_token(requested_token_type=requested, scope=scope)
        if requested == ID_TOKEN_TYPE and OPENID not in scope:
            raise ScopeRefusal("id_token_without_openid")
        if (issue_id_token or requested == ID_TOKEN_TYPE) and not client.algorithm:
            raise Refusal("client_cannot_sign_id_tokens")
        if requested == JWT_TYPE and not oauth2_settings.OIDC_RSA_PRIVATE_KEY:
            raise Refusal("no_signing_key")
        if external and requested == ID_TOKEN_TYPE:
            # The tokens issued for an external subject are their own authorization, which an
            # access token carries (lineage): an ID token alone would have none.
            raise Refusal("id_token_for_external_subject")
        if claims.impersonation_id is not None and requested == JWT_TYPE:
            # Stop revokes by deleting rows; a resource server that checks a JWT offline
            # would accept it until exp. Tokens of an admin-started impersonation stay revocable.
            raise Refusal("jwt_under_admin_impersonation")

        # 3. The users.
        if waiting is not None:
            raise waiting
        assert subject is not None
        self.check_impersonation(subject, actor, terms, security, issuer)

        subject_claims: dict[str, Any] = {}
        request.user = subject.user
        request.scopes = sorted(scope)
        if issue_id_token or requested == ID_TOKEN_TYPE:
            subject_claims = self.request_validator.get_oidc_claims(None, None, request)

        return Issuance(
            client=client,
            user=subject.user,
            requested_token_type=requested,
            scope=scope,
            audience=terms.audience,
            resource=terms.resource,
            expires_in=self.lifetime(requested, terms.not_after, impersonated=terms.act is not None),
            issue_refresh_token=policy.issues_refresh_token(requested_token_type=requested, scope=scope),
            issue_id_token=issue_id_token,
            issuer=issuer,
            subject_claims=subject_claims,
            audit_context=context,
            act=terms.act,
            impersonation_id=subject.impersonation_id,
            lineage=lineage.descent(subject=subject, actor=actor),
            federated_identity_id=subject.federated.identity_id if subject.federated else None,
        )

    def read_subject(
        self,
        params: ExchangeParameters,
        client: Any,
        issuer: str,
        context: audit.AuditContext,
        *,
        external: bool = False,
    ) -> VerifiedToken:
        subject = read_token(
            params.subject_token_type,
            params.subject_token,
            InvalidSubjectToken,
            issuer=issuer,
            client=client,
            external=external,
        )
        context.subject = subject.user
        if subject.federated is not None:
            context.external = {"iss": subject.federated.issuer, "sub": subject.federated.subject}
        context.act = subject.act
        if subject.client_id is not None and not policy.may_present(
            client_id=client.client_id,
            token_client_id=subject.client_id,
            token_audience=subject.audience,
            client_resources=client_resources(client),
        ):
            raise InvalidSubjectToken("token_of_another_client")
        if subject.client_id is not None and not lineage.known(subject):
            # A token whose authorization cannot be determined (an ID token issued alone) would
            # give tokens nothing to end with: fail closed.
            raise InvalidSubjectToken(lineage.AUTHORIZATION_UNKNOWN)
        return subject

    def exchange_terms(
        self, params: ExchangeParameters, subject: PresentedClaims, client_scopes: frozenset[str]
    ) -> Terms:
        """An exchange without an actor: within the subject token, and keeping its ``act``."""
        scope = policy.resolve_scope(
            requested=params.scope, subject_scope=subject.scope, client_scopes=client_scopes
        )
        audience = policy.resolve_audience(requested=params.target, allowed=subject.audience)
        if not params.target and subject.default_audience is not None:
            audience = subject.default_audience
        return Terms(
            scope=scope,
            audience=audience,
            # Narrowed tokens are restricted to exactly their audience; otherwise the token
            # is as restricted (or not) as the one it was exchanged for.
            resource=audience if params.target else subject.resource,
            act=subject.act,
            not_after=subject.expires,
        )

    def read_actor(
        self, params: ExchangeParameters, client: Any, issuer: str, context: audit.AuditContext
    ) -> VerifiedToken:
        assert params.actor_token is not None
        assert params.actor_token_type is not None
        actor = read_token(
            params.actor_token_type, params.actor_token, InvalidActorToken, issuer=issuer, client=client
        )
        context.actor = actor.user
        assert actor.client_id is not None  # actors present tokens, never bare user ids
        if not policy.may_present(
            client_id=client.client_id,
            token_client_id=actor.client_id,
            token_audience=actor.audience,
            client_resources=client_resources(client),
        ):
            raise InvalidActorToken("token_of_another_client")
        if actor.act is not None:
            # An impersonated token acting again would hide who really acts behind a new act.
            raise InvalidActorToken("actor_token_carries_act")
        if actor.authorization is None:
            # An impersonation lives by its actor's authorization: one that cannot be determined
            # is refused, never recorded as none.
            raise InvalidActorToken(lineage.AUTHORIZATION_UNKNOWN)
        return actor

    def impersonation_terms(
        self,
        params: ExchangeParameters,
        subject: PresentedClaims,
        actor: VerifiedToken,
        client_scopes: frozenset[str],
        issuer: str,
    ) -> Terms:
        """An exchange with an actor: scope, audience and ``act``, from the tokens' claims.

        Whether this actor may act for this subject is :meth:`check_impersonation`'s, afterwards.
        """
        act = policy.act_claim(
            issuer=issuer,
            actor_id=str(actor.user.pk),
            prior=subject.act,
            max_depth=token_exchange_settings.MAX_ACT_DEPTH,
        )
        scope = policy.resolve_impersonation_scope(
            requested=params.scope,
            subject_scope=subject.scope,
            subject_authorizes=subject.token_type == ACCESS_TOKEN_TYPE,
            actor_scope=actor.scope,
            client_scopes=client_scopes,
        )
        audience = policy.resolve_impersonation_audience(
            requested=params.target, subject_audience=subject.audience, actor_audience=actor.audience
        )
        resource = audience if params.target else subject.resource if subject.audience else actor.resource
        expiries = [moment for moment in (subject.expires, actor.expires) if moment is not None]
        return Terms(scope=scope, audience=audience, resource=resource, act=act, not_after=min(expiries))

    def check_impersonation(
        self,
        subject: VerifiedToken,
        actor: VerifiedToken | None,
        terms: Terms,
        security: SecuritySettings,
        issuer: str,
    ) -> None:
        """The one impersonation decision (``impersonation_decision``), for a token that will
        carry ``act``: every actor of its chain, the new one first, must (still) be allowed to act
        for the subject, as on refresh; with an actor token, ``may_act`` (RFC 8693 §4.4) too.

        A subject issued under an admin-started impersonation is renewed only while that runs.
        Its session's row is locked for this request's transaction before any token row is
        written, as ``impersonation_sessions.end`` locks it: a Stop that commits after this
        decision waits, then revokes what this request issued.
        """
        session = None
        if subject.impersonation_id is not None:
            session = impersonation_sessions.running(subject.impersonation_id, lock=True)
            if session is None:
                raise Refusal("impersonation_ended")
        if terms.act is None and session is None:
            return
        may_act = actor is None or policy.satisfies_may_act(
            may_act=subject.may_act, issuer=issuer, actor_id=str(actor.user.pk)
        )
        reason = impersonation_decision.refusal(
            allowed=security.allow_impersonation,
            subject=subject.user,
            act=terms.act,
            issuer=issuer,
            known=(actor.user,) if actor is not None else (),
            may_act=may_act,
            session=session,
        )
        if reason is not None:
            raise Refusal(reason)

    def lifetime(
        self, requested_token_type: str, not_after: datetime.datetime | None, *, impersonated: bool
    ) -> int:
        if requested_token_type == ID_TOKEN_TYPE:
            default = (
                token_exchange_settings.ID_TOKEN_EXPIRE_SECONDS or oauth2_settings.ID_TOKEN_EXPIRE_SECONDS
            )
        else:
            default = (
                token_exchange_settings.ACCESS_TOKEN_EXPIRE_SECONDS
                or oauth2_settings.ACCESS_TOKEN_EXPIRE_SECONDS
            )
        seconds = int(default)
        if impersonated:
            seconds = min(seconds, token_exchange_settings.IMPERSONATION_TOKEN_EXPIRE_SECONDS)
        return policy.lifetime_seconds(now=timezone.now(), default_seconds=seconds, not_after=not_after)
