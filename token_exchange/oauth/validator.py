"""DOT's request validator, taught private_key_jwt and to refresh exchanged tokens without
losing their claims.

An exchanged token's audience may name clients as well as RFC 8707 resource URIs, and it may
carry ``act``. When the refresh_token grant rotates such a token, the new access, refresh and
ID tokens keep the audience, resource restriction and ``act`` of the old one, and a refresh may
narrow the audience but never widen it.

A refresh of an impersonated token (one with ``act``) is an impersonation again: the policy is
re-decided (switch on, grants still held, everyone still active) or the refresh fails with
``invalid_grant``; the new access token is capped at ``IMPERSONATION_TOKEN_EXPIRE_SECONDS``, and
the refresh is audited as ``user.impersonated`` in the transaction that stores the tokens.
A refresh of any exchanged token, impersonated or not, also needs the authorization it descends
from to be alive (``lineage``): a refresh of a token whose login (its actor's, for an
impersonation) logged out, was revoked or expired fails and revokes what hangs off that
authorization, and the new tokens keep the lineage. Revoking a token at the RFC 7009 endpoint
ends, in the same transaction, every token exchanged from it (``revoke_token``); DOT's bearer
check for resource servers refuses an exchanged token whose lineage ended, or whose
admin-started impersonation may not go on (``validate_bearer_token``).

The RFC 8628 device code grant's token request is answered from DOT's ``DeviceGrant``
(``validate_device_code``, the oauthlib 4 hook DOT does not implement yet): a code is good only
for the client it was issued to, until its ``expires``, and for one set of tokens
(``save_bearer_token`` uses it up in the transaction that stores them).
"""

from __future__ import annotations

import datetime
import hashlib
import logging
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import router, transaction
from django.db.models import Q
from django.utils import timezone
from oauth2_provider.models import get_access_token_model, get_device_grant_model, get_refresh_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request
from oauthlib.oauth2.rfc6749 import errors, utils
from oauthlib.oauth2.rfc8628 import errors as device_errors

from token_exchange import client_ids, policy
from token_exchange.conf import token_exchange_settings
from token_exchange.constants import (
    ACCESS_TOKEN_TYPE,
    ACT,
    AUTHORIZATION_CODE,
    DEVICE_CODE_GRANT_TYPE,
    ID_TOKEN_TYPE,
    REFRESH_TOKEN_TYPE,
)
from token_exchange.db.lookups import unique_row
from token_exchange.impersonation import decision as impersonation_decision
from token_exchange.impersonation import sessions as impersonation_sessions
from token_exchange.issuance import audit, lineage
from token_exchange.jwt import client_assertion
from token_exchange.models import ExchangedToken, ImpersonationSession, SecuritySettings
from token_exchange.parameters import storable
from token_exchange.tokens.base import native_audience

logger = logging.getLogger("token_exchange")

_RECORD = "token_exchange_refreshed"
_ISSUED = "token_exchange_issued"
_CONTEXT = "token_exchange_context"
_IMPERSONATION = "token_exchange_impersonation"
_CIMD = "cimd"  # DOT's Application.RegistrationSource.CIMD
_DEVICE_GRANT = "token_exchange_device_grant"
_ASSERTION_CLIENT = "token_exchange_assertion_client"

# oauthlib 4's DeviceCodeGrant.DEVICE_CODE_* statuses (3.3 has none): "authorized", or the
# ``error`` of the RFC 8628 §3.5 error the grant raises for the status.
DEVICE_CODE_AUTHORIZED = "authorized"
DEVICE_CODE_PENDING: str = device_errors.AuthorizationPendingError.error
DEVICE_CODE_EXPIRED: str = device_errors.ExpiredTokenError.error
DEVICE_CODE_DENIED: str = device_errors.AccessDenied.error
_DEVICE_CODE_ERRORS: dict[str, type[errors.OAuth2Error]] = {
    error.error: error
    for error in (
        device_errors.AuthorizationPendingError,
        device_errors.SlowDownError,
        device_errors.ExpiredTokenError,
        device_errors.AccessDenied,
    )
}


def _state(request: Request, name: str) -> Any:
    """An attribute this package (or ``AuthorizationView``'s credentials) set on the request.

    Never ``getattr``: oauthlib's ``Request`` answers unknown attributes from the query and the
    form body, so a client could otherwise supply any of them as a parameter.
    """
    return vars(request).get(name)


class TokenExchangeValidator(OAuth2Validator):  # type: ignore[misc]
    def client_authentication_required(self, request: Request, *args: Any, **kwargs: Any) -> bool:
        # A client that presents an assertion asks to be authenticated by it, whoever verifies it:
        # it never passes as a public client identified by its client_id alone.
        if client_assertion.presented(request):
            return True
        required: bool = super().client_authentication_required(request, *args, **kwargs)
        return required

    def authenticate_client(self, request: Request, *args: Any, **kwargs: Any) -> bool:
        """DOT's client_secret_basic and client_secret_post, plus private_key_jwt.

        A request that carries a client assertion is authenticated by it alone, for every grant
        and for the revocation and introspection endpoints alike. Who verifies it is decided by
        ``client_assertion.handles``: this package, or, with ``TOKEN_EXCHANGE["CLIENT_AUTHENTICATION"]
        = "oauth2_provider"``, DOT's ``authenticate_client`` (below, as for a secret).
        """
        if client_assertion.handles(request):
            # oauthlib 3.3's device code grant asks twice for one request; the second time this
            # very assertion's jti is used. The answer of the first stands, for this request only.
            authenticated = _state(request, _ASSERTION_CLIENT)
            if authenticated is not None:
                request.client, request.client_id = authenticated, authenticated.client_id
                return True
            if not client_assertion.authenticate(request, issuer=self.get_oidc_issuer_endpoint(request)):
                return False
            setattr(request, _ASSERTION_CLIENT, request.client)
            return True
        if client_assertion.unverifiable(request):
            logger.info("Client authentication refused: client_assertion_unverifiable")
            return False
        body: list[tuple[str, str]] = list(request.decoded_body or [])
        secret_in_body = any(key == "client_secret" and value for key, value in body)
        if client_assertion.basic_auth(request) and secret_in_body:
            # RFC 6749 §2.3: one method per request. DOT would try Basic and ignore the body.
            # (An empty client_secret, which some libraries send beside Basic, is no method.)
            logger.info("Client authentication refused: several_authentication_methods")
            return False
        if not super().authenticate_client(request, *args, **kwargs):
            return False
        if any(key == "client_id" and value != request.client.client_id for key, value in body):
            # Authenticated as one client while naming another: DOT would go on as the first.
            logger.info("Client authentication refused for %s: client_id_mismatch", request.client.client_id)
            return False
        return True

    def _load_application(self, client_id: Any, request: Request) -> Any:
        """DOT's lookup, for a client_id a database can compare: one with a NUL byte or a lone
        surrogate names no client (PostgreSQL would raise, not answer).

        The client is read with its token exchange policy in one query and handed to DOT, which
        reuses a client already on the request (and still checks that it is usable). Unknown
        ids and Client ID Metadata Document clients take DOT's own path, which may fetch.
        """
        # Private DOT hook, checked against DOT 3.4.1 (unchanged on DOT main 0f9d49f4). Every client
        # lookup goes through it (Basic and body authentication, authenticate_client_id,
        # validate_client_id, client_authentication_required), so one override refuses ids a
        # database cannot compare or that look like resource URIs, and reads the client with its
        # policy and the security settings. Public hook that would replace it: a public DOT
        # ``load_application(client_id, request)``; overriding those four callers instead would
        # repeat the guard, decode Basic credentials before DOT, and miss any caller DOT adds.
        if not isinstance(client_id, str) or not storable(client_id):
            return None
        if client_ids.names_no_client(client_id):
            # An absolute URI would share the audience namespace with resource indicators.
            return None
        if not request.client:
            client = client_assertion.load_client(client_id)
            if client is not None and getattr(client, "registration_source", None) != _CIMD:
                request.client = client
        return super()._load_application(client_id, request)

    def validate_code(
        self, client_id: str, code: str, client: Any, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        """DOT's check, then, for a code issued under an admin-started impersonation, the
        impersonation rules again and the session: it must still be running."""
        valid: bool = super().validate_code(client_id, code, client, request, *args, **kwargs)
        setattr(request, _RECORD, None)
        setattr(request, _ISSUED, [])
        if not valid:
            return False
        record = (
            ExchangedToken.objects.select_related("impersonation")
            .filter(grant__code=code, grant__application=client)
            .first()
        )
        setattr(request, _RECORD, record)
        if record is None or record.act is None:
            return True
        if not self._recheck_impersonation(record, client, request, grant_type="authorization_code"):
            return False
        self._check_and_set_request_resource(request)
        return True

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        valid: bool = super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
        if not valid:
            return False
        instance = request.refresh_token_instance
        record = unique_row(
            lineage.with_liveness(ExchangedToken.objects.select_related("impersonation")).filter(
                refresh_token=instance
            )
        )
        setattr(request, _RECORD, record)
        setattr(request, _ISSUED, [])
        if record is None:
            return True
        if record.act is not None and not self._recheck_impersonation(
            record, client, request, grant_type="refresh_token"
        ):
            return False
        if not self._lineage_alive(record, client, request):
            return False
        # DOT checks the requested resource only when it saves the tokens, after the ID token
        # is minted; check it now, before anything is written (the check is idempotent).
        try:
            self._check_and_set_request_resource(request)
        except errors.OAuth2Error as error:
            if record.act is not None:
                audit.refused(_state(request, _CONTEXT), reason="audience_exceeds_subject", error=error.error)
            raise
        return True

    def validate_device_code(
        self, client_id: Any, code: Any, request: Request, *args: Any, **kwargs: Any
    ) -> str | None:
        """RFC 8628 §3.5: where the device code stands, for the client asking; for an approved
        one, ``request.user`` and ``request.scopes`` are the grant's.

        An oauthlib 4 hook that DOT does not implement yet (not in 3.4.1, nor on its main branch
        at ``0f9d49f4``): oauthlib 4's ``DeviceCodeGrant`` calls it, and without it every token
        request of an approved device was an ``AttributeError``, a 500. It returns oauthlib's
        ``DEVICE_CODE_*`` statuses (the grant raises the §3.5 error of each; ``None`` is
        ``invalid_grant``) and reads DOT's ``DeviceGrant`` through its public model API
        (``get_device_grant_model``, ``is_expired``). oauthlib 3.3 never calls it;
        ``save_bearer_token`` does then. Checked against DOT 3.4.1 and oauthlib 3.3 and 4.0; when a
        DOT release implements it, this stays only if DOT's does not bind the code to its client
        and spend it once (3.4.1's own path, the ``OAUTH_PRE_TOKEN_VALIDATION`` function
        ``set_oauthlib_user_to_device_request_user``, does neither).

        ``invalid_grant`` (the log says which): a code issued to another client (RFC 6749 §5.2),
        an unknown one, and an approved one without an active user. A code past its ``expires``
        is ``expired_token`` whatever its status (RFC 8628 §3.2: ``expires_in`` is its lifetime,
        which an approval does not extend); DOT's ``is_expired`` records it as expired.
        """
        setattr(request, _DEVICE_GRANT, None)
        client = request.client
        if client is None or not isinstance(code, str) or not storable(code):
            return None
        model = get_device_grant_model()
        grant = unique_row(
            model._default_manager.using(router.db_for_write(model))
            .select_related("user")
            .filter(device_code=code, client_id=client.client_id)
        )
        if grant is None:
            # The device code is a credential: logged by the client that sent it, never itself.
            logger.info("Device code refused for client %s: unknown_or_another_clients", client.client_id)
            return None
        if grant.is_expired():
            return DEVICE_CODE_EXPIRED
        if grant.status != grant.AUTHORIZED:
            statuses = {grant.AUTHORIZATION_PENDING: DEVICE_CODE_PENDING, grant.DENIED: DEVICE_CODE_DENIED}
            status = statuses.get(grant.status)
            if status is None:
                logger.warning("Device code refused for client %s: unknown_status", client.client_id)
            return status
        if grant.user is None or not getattr(grant.user, "is_active", True):
            logger.info("Device code refused for client %s: user_inactive", client.client_id)
            return None
        request.user = grant.user
        request.scopes = grant.scope.split()
        setattr(request, _DEVICE_GRANT, grant)
        return DEVICE_CODE_AUTHORIZED

    def _use_device_code(self, request: Request, token: dict[str, Any]) -> None:
        """Spend the device code of this token request, or raise: one set of tokens per code.

        One conditional UPDATE, in the transaction that stores the tokens: of two polls at once
        only one finds the grant still authorized (PostgreSQL re-reads the row once the first
        commits; SQLite has one writer), and a request that fails later rolls it back. A grant
        routed to another database than the tokens is spent there first: a failure to store the
        tokens then leaves it spent (closed, not open). Spent, it is ``expired`` (RFC 8628 §3.5
        ``expired_token``: "the device authorization session has concluded"), which DOT's token
        view answers before oauthlib is asked; DOT 3.4.1 leaves an approved code approved, and
        every poll with it was another set of tokens.
        """
        grant = _state(request, _DEVICE_GRANT)
        if grant is None:
            # oauthlib 3.3: nothing asked about the code. DOT's view answered every status but
            # approved, and its pre-token function set the user and scopes of whatever grant has
            # this code, whoever's client it is. Ask now, before anything is stored.
            code = dict(request.decoded_body or []).get("device_code")
            status = self.validate_device_code(request.client_id, code, request)
            if status != DEVICE_CODE_AUTHORIZED:
                raise _DEVICE_CODE_ERRORS.get(status or "", errors.InvalidGrantError)(request=request)
            grant = _state(request, _DEVICE_GRANT)
        # RFC 8628 §3.4's token request carries no scope: the tokens get what the user approved.
        # oauthlib reads a scope parameter when the grant's scope is empty; never beyond it.
        if not set(utils.scope_to_list(token.get("scope") or "")) <= set(grant.scope.split()):
            logger.info("Device code refused for client %s: scope_beyond_grant", request.client.client_id)
            raise errors.InvalidScopeError(request=request)
        spent = (
            type(grant)
            ._default_manager.using(router.db_for_write(type(grant)))
            .filter(pk=grant.pk, status=grant.AUTHORIZED, user=grant.user_id, expires__gt=timezone.now())
            .update(status=grant.EXPIRED)
        )
        if not spent:
            logger.info("Device code refused for client %s: already_used", request.client.client_id)
            raise errors.InvalidGrantError(request=request)

    def _impersonation_context(
        self, request: Request, record: ExchangedToken, grant_type: str
    ) -> audit.AuditContext:
        act = record.act or {}
        context = audit.AuditContext(
            application=request.client,
            client_ip=audit.client_ip(request.headers),
            grant_type=grant_type,
            subject=request.user,
            issuer=self.get_oidc_issuer_endpoint(request),
            impersonation=record.impersonation,
            act=record.act,
        )
        context.actor = get_user_model()._default_manager.filter(pk=str(act.get("sub"))).first()
        return context

    def _recheck_impersonation(
        self, record: ExchangedToken, client: Any, request: Request, *, grant_type: str
    ) -> bool:
        """The impersonation rules again, as of now; a refusal is logged and audited.

        Tokens issued under an admin-started impersonation also need that session to be running.
        """
        context = self._impersonation_context(request, record, grant_type)
        setattr(request, _CONTEXT, context)
        # The exchange's own decision; a session that may not go on ends, revoking its tokens.
        reason = impersonation_decision.refusal(
            allowed=SecuritySettings.of(client).allow_impersonation,
            subject=request.user,
            act=record.act,
            issuer=context.issuer or "",
            known=(context.actor,) if context.actor is not None else (),
            session=record.impersonation,
        )
        if reason is None:
            return True
        logger.info(
            "%s of an impersonated token refused for client %s: %s", grant_type, client.client_id, reason
        )
        audit.refused(context, reason=reason, error="invalid_grant")
        return False

    def _lineage_alive(self, record: ExchangedToken, client: Any, request: Request) -> bool:
        """An exchanged token is refreshed only while the authorization it descends from lives
        (for an impersonation, asked after the rules, so a refusal names the rule first). When it
        has ended, everything that hangs off it is revoked now, and the refusal is audited."""
        descent = lineage.of(record)
        if descent is None or lineage.alive(descent, record):
            return True
        context = _state(request, _CONTEXT) or audit.AuditContext(
            application=client,
            client_ip=audit.client_ip(request.headers),
            grant_type="refresh_token",
            subject=request.user,
            issuer=self.get_oidc_issuer_endpoint(request),
        )
        lineage.end(descent, subject=request.user, application=client, client_ip=context.client_ip)
        reason = lineage.ended_reason(record.act)
        logger.info("refresh_token of an exchanged token refused for client %s: %s", client.client_id, reason)
        audit.refused(context, reason=reason, error="invalid_grant")
        return False

    def _impersonation_deadline(self, record: ExchangedToken) -> datetime.datetime:
        """The latest an impersonated token may expire: the token cap, and the session's end."""
        deadline = timezone.now() + datetime.timedelta(
            seconds=token_exchange_settings.IMPERSONATION_TOKEN_EXPIRE_SECONDS
        )
        if record.impersonation is not None:
            deadline = min(deadline, record.impersonation.expires_at)
        return deadline

    def _create_authorization_code(self, request: Request, code: dict[str, Any], expires: Any = None) -> Any:
        """A code for the customer, not the support user, while an admin-started impersonation
        runs for this client (``views.AuthorizationView`` puts it on the request)."""
        # Private DOT hook, checked against DOT 3.4.1 (unchanged on DOT main 0f9d49f4): while an
        # admin-started impersonation runs, the code is the customer's and gets its ExchangedToken
        # in the same transaction. Public hook that would replace it: oauthlib's
        # ``save_authorization_code`` (DOT's only caller of this one), then the grant row read back
        # by its unique code (one more statement at the authorization endpoint).
        session = _state(request, _IMPERSONATION)
        if not isinstance(session, ImpersonationSession):
            return super()._create_authorization_code(request, code, expires)
        request.user = session.subject
        act = policy.act_claim(
            issuer=self.get_oidc_issuer_endpoint(request),
            actor_id=str(session.actor_id),
            prior=None,
            max_depth=token_exchange_settings.MAX_ACT_DEPTH,
        )
        with transaction.atomic(using=router.db_for_write(ExchangedToken)):
            grant = super()._create_authorization_code(request, code, expires)
            ExchangedToken.objects.create(
                grant=grant,
                jti=uuid.uuid4().hex,
                issued_token_type=AUTHORIZATION_CODE,
                # As for any code DOT issues: its resource indicators plus the client.
                audience=list(native_audience(grant.resource, request.client.client_id)),
                resource=list(grant.resource or []),
                act=act,
                impersonation=session,
            )
        return grant

    def _validate_resource_uris(self, request: Request, resources: list[str]) -> None:
        # Private DOT hook, checked against DOT 3.4.1 (unchanged on DOT main 0f9d49f4): DOT wants
        # every RFC 8707 resource to be an absolute URI; an exchanged token's audience may also name
        # clients, which a refresh may narrow to, so values this server bound to the token skip
        # that check. Public hook that would replace it: none yet; DOT would have to expose its
        # resource-indicator check (a public method, or a setting as on its resource-server side).
        # Audience values this server itself bound to the refresh token (client_ids among
        # them) are not client input; only what is left must look like a resource URI.
        record: ExchangedToken | None = _state(request, _RECORD)
        trusted = set(record.audience) if record is not None else set()
        super()._validate_resource_uris(request, [value for value in resources if value not in trusted])

    def _check_and_set_request_resource(self, request: Request) -> None:
        # Private DOT hook, checked against DOT 3.4.1 (unchanged on DOT main 0f9d49f4), which
        # validate_code and validate_refresh_token also call to run DOT's check before anything is
        # minted: after DOT's RFC 8707 normalisation, a refresh may not widen an exchanged token's
        # audience. Public hook that would replace our part: the same test in the public
        # validate_refresh_token on the requested values; DOT's normalisation has no public entry.
        super()._check_and_set_request_resource(request)
        record: ExchangedToken | None = _state(request, _RECORD)
        if record is not None and any(value not in record.audience for value in request.resource):
            raise errors.CustomOAuth2Error(
                error="invalid_target",
                description="A refresh cannot widen the audience of an exchanged token.",
                request=request,
            )

    def _copy_record(self, request: Request, issued_token_type: str, **token: Any) -> None:
        record: ExchangedToken | None = _state(request, _RECORD)
        if record is None:
            return
        # DOT has set request.resource to the refresh token's restriction, or to the narrower
        # one the client asked for (checked above).
        created = ExchangedToken.objects.create(
            jti=uuid.uuid4().hex,
            issued_token_type=issued_token_type,
            audience=list(_state(request, "resource") or []) or record.audience,
            resource=list(_state(request, "resource") or []),
            act=record.act,
            impersonation_id=record.impersonation_id,
            actor_token_family=record.actor_token_family,
            actor_access_token_id=record.actor_access_token_id,
            lineage=record.lineage,
            # A token issued for a trusted issuer's token stays under its link through every
            # refresh: withdrawing the link finds the refreshed rows (federation.withdrawal), even
            # after cleartokens removed the first ones.
            federated_identity_id=record.federated_identity_id,
            **token,
        )
        _state(request, _ISSUED).append(created)

    def save_bearer_token(self, token: dict[str, Any], request: Request, *args: Any, **kwargs: Any) -> Any:
        """DOT's transaction, which for a code or refresh token of an admin-started impersonation
        first locks the session and checks it again: a Stop that committed after the checks in
        ``validate_code``/``validate_refresh_token`` wins. The session is locked before DOT locks
        the refresh token, in the order ``impersonation_sessions.end`` takes them.

        A device code's tokens are stored in the transaction that spends the code
        (``_use_device_code``)."""
        if request.grant_type == DEVICE_CODE_GRANT_TYPE:
            with transaction.atomic(using=router.db_for_write(get_access_token_model())):
                self._use_device_code(request, token)
                return super().save_bearer_token(token, request, *args, **kwargs)
        record: ExchangedToken | None = _state(request, _RECORD)
        if record is None or record.impersonation_id is None:
            return super().save_bearer_token(token, request, *args, **kwargs)
        with transaction.atomic(using=router.db_for_write(get_access_token_model())):
            # Refused here only if the session changed since validate_code/validate_refresh_token
            # decided (and ended it, committed). oauthlib lets this error out of the request's
            # transaction, so an end recorded by this second look rolls back with the rest; the
            # next use of any of its tokens decides again and ends it then.
            if impersonation_decision.session_refusal(record.impersonation_id, lock=True) is not None:
                raise errors.InvalidGrantError(description="The impersonation has ended.", request=request)
            session = record.impersonation
            scope = str(token.get("scope", ""))
            if (
                "refresh_token" in token
                and session is not None
                and not impersonation_sessions.refresh_allowed(session, scope)
            ):
                # oauthlib put a refresh token in the response; DOT writes a refresh token row
                # only when the dict has one, so neither the response nor the table gets one.
                del token["refresh_token"]
                presented = _state(request, "refresh_token_instance")
                if isinstance(presented, get_refresh_token_model()):
                    # A refresh that may not renew itself uses its refresh token up.
                    presented.revoke()
            return super().save_bearer_token(token, request, *args, **kwargs)

    def revoke_token(
        self, token: str, token_type_hint: str | None, request: Request, *args: Any, **kwargs: Any
    ) -> None:
        """DOT's RFC 7009 revocation, and in the same transaction the end of every token that
        descends from the authorization it ends (``lineage.cascade``): impersonations it was the
        actor token of, and tokens exchanged from it.

        The authorizations are read before DOT deletes the rows that name them; only those that
        the revocation actually ended are followed (revoking an access token that a refresh has
        already replaced leaves its family, and the impersonations on it, alive).
        """
        with transaction.atomic(using=router.db_for_write(get_access_token_model())):
            application = request.client if getattr(request.client, "pk", None) is not None else None
            families, access_tokens, owner = (
                lineage.presented_authorizations(token, application)
                if application is not None
                else ([], [], None)
            )
            super().revoke_token(token, token_type_hint, request, *args, **kwargs)
            if families or access_tokens:
                lineage.cascade(
                    families=families,
                    access_tokens=access_tokens,
                    reasons=(lineage.ACTOR_TOKEN_REVOKED, lineage.TOKEN_REVOKED),
                    user=owner,
                    application=application,
                    client_ip=audit.client_ip(request.headers),
                )

    def validate_bearer_token(self, token: str, scopes: Any, request: Request) -> bool:
        """DOT's check for resource servers, then, for a token an exchange issued, the same
        liveness as introspection: its lineage (the authorization it descends from) must live,
        and an admin-started impersonation's session must go on. One more query per request (the
        token's ``ExchangedToken``), and one more for a token an exchange issued (its liveness); a
        token found ended is revoked with what
        hangs off it (``lineage.refuse_if_ended``, ``impersonation_decision.session_refusal``)."""
        valid: bool = super().validate_bearer_token(token, scopes, request)
        access_token = _state(request, "access_token")
        if not valid or getattr(access_token, "pk", None) is None:
            return valid
        # Without the liveness annotation: most bearer tokens were not exchanged, and PostgreSQL
        # would plan its subqueries for each of them; refuse_if_ended asks only for those that were.
        record = unique_row(ExchangedToken.objects.filter(access_token=access_token))
        if record is None:
            return True
        reason = lineage.refuse_if_ended(
            record, subject=access_token.user, application=access_token.application
        )
        if reason is None and record.impersonation_id is not None:
            reason = impersonation_decision.session_refusal(record.impersonation_id)
        if reason is None:
            return True
        logger.info("Bearer token %s refused: %s", record.jti, reason)
        # As DOT answers any token that is no longer valid.
        request.oauth2_error = {"error": "invalid_token", "error_description": "The access token is invalid."}
        return False

    def _save_bearer_token(self, token: dict[str, Any], request: Request, *args: Any, **kwargs: Any) -> Any:
        # Private DOT hook that DOT's own save_bearer_token docstring names as the place to add
        # logic; checked against DOT 3.4.1 (DOT main 0f9d49f4 still reads token["expires_in"]):
        # caps an impersonated refresh's lifetime and audits it with the tokens. Public hook that
        # would replace it: save_bearer_token itself (cap before super(), audit after it), now
        # that server.py holds the whole token request in one transaction.
        # DOT runs this inside a transaction on the access token database: the audit row of an
        # impersonated refresh is written, or rolled back, together with the tokens.
        record: ExchangedToken | None = _state(request, _RECORD)
        if record is None or record.act is None:
            return super()._save_bearer_token(token, request, *args, **kwargs)
        cap = max(1, int((self._impersonation_deadline(record) - timezone.now()).total_seconds()))
        token["expires_in"] = min(int(token.get("expires_in") or cap), cap)
        result = super()._save_bearer_token(token, request, *args, **kwargs)
        issued: list[ExchangedToken] = _state(request, _ISSUED)
        if not any(row.issued_token_type == ACCESS_TOKEN_TYPE for row in issued):
            # DOT created no access token: ROTATE_REFRESH_TOKEN off (it updated the token in place)
            # or a retry within REFRESH_TOKEN_GRACE_PERIOD_SECONDS (it answers with the tokens the
            # first refresh issued). Either way the response's tokens have their records already.
            checksum = hashlib.sha256(str(token["access_token"]).encode("utf-8")).hexdigest()
            issued += ExchangedToken.objects.filter(
                Q(access_token__token_checksum=checksum)
                | Q(refresh_token__access_token__token_checksum=checksum)
            )
        audit.issued(
            _state(request, _CONTEXT),
            tokens=issued,
            issued_token_type=ACCESS_TOKEN_TYPE,
            scope=token["scope"],
            audience=list(_state(request, "resource") or []) or record.audience,
            expires_in=token["expires_in"],
            act=record.act,
            using=router.db_for_write(get_access_token_model()),
        )
        return result

    def get_id_token_dictionary(self, token: Any, token_handler: Any, request: Request) -> Any:
        claims, expiration_time = super().get_id_token_dictionary(token, token_handler, request)
        record: ExchangedToken | None = _state(request, _RECORD)
        if record is not None and record.act is not None:
            claims[ACT] = record.act
            # Impersonated ID tokens are as short-lived as impersonated access tokens.
            cap = self._impersonation_deadline(record)
            if expiration_time > cap:
                expiration_time = cap
                claims["exp"] = int(cap.timestamp())
        return claims, expiration_time

    def _save_id_token(self, jti: Any, request: Request, expires: Any, *args: Any, **kwargs: Any) -> Any:
        # Private DOT hook, checked against DOT 3.4.1 (unchanged on DOT main 0f9d49f4): gives a
        # refreshed exchanged ID token its ExchangedToken row. Public hook that would replace it:
        # oauthlib's finalize_id_token, with the IDToken row DOT leaves on request.id_token.
        id_token = super()._save_id_token(jti, request, expires, *args, **kwargs)
        self._copy_record(request, ID_TOKEN_TYPE, id_token=id_token)
        return id_token

    def _create_access_token(
        self, expires: Any, request: Request, token: dict[str, Any], source_refresh_token: Any = None
    ) -> Any:
        # Private DOT hook, checked against DOT 3.4.1 (unchanged on DOT main 0f9d49f4): gives the
        # access token a refresh of an exchanged token creates its ExchangedToken row. Public hook
        # that would replace it: save_bearer_token after super(), reading the row back by
        # token_checksum (one more statement per refresh of an exchanged token).
        access_token = super()._create_access_token(
            expires, request, token, source_refresh_token=source_refresh_token
        )
        self._copy_record(request, ACCESS_TOKEN_TYPE, access_token=access_token)
        return access_token

    def _create_refresh_token(
        self, request: Request, refresh_token_code: str, access_token: Any, previous_refresh_token: Any
    ) -> Any:
        # Private DOT hook, checked against DOT 3.4.1 (DOT main 0f9d49f4 adds only IntegrityError
        # -> invalid_grant): gives an exchanged token's new refresh token its ExchangedToken row.
        # Public hook that would replace it: save_bearer_token after super(), by token_checksum,
        # in the same statement as the access token's.
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        self._copy_record(request, REFRESH_TOKEN_TYPE, refresh_token=refresh_token)
        return refresh_token
