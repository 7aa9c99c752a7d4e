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
"""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import router
from django.db.models import Q
from django.utils import timezone
from oauth2_provider.models import get_access_token_model
from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request
from oauthlib.oauth2.rfc6749 import errors

from . import audit, client_assertion, impersonation
from .conf import token_exchange_settings
from .constants import ACCESS_TOKEN_TYPE, ACT, ID_TOKEN_TYPE, REFRESH_TOKEN_TYPE
from .models import ExchangedToken, SecuritySettings

logger = logging.getLogger("token_exchange")

_RECORD = "token_exchange_refreshed"
_ISSUED = "token_exchange_issued"


class TokenExchangeValidator(OAuth2Validator):  # type: ignore[misc]
    def client_authentication_required(self, request: Request, *args: Any, **kwargs: Any) -> bool:
        if client_assertion.presented(request):
            return True
        required: bool = super().client_authentication_required(request, *args, **kwargs)
        return required

    def authenticate_client(self, request: Request, *args: Any, **kwargs: Any) -> bool:
        """DOT's client_secret_basic and client_secret_post, plus private_key_jwt.

        A request that carries a client assertion is authenticated by it alone, for every grant
        and for the revocation and introspection endpoints alike.
        """
        if client_assertion.presented(request):
            return client_assertion.authenticate(request, issuer=self.get_oidc_issuer_endpoint(request))
        authenticated: bool = super().authenticate_client(request, *args, **kwargs)
        return authenticated

    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        valid: bool = super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
        if not valid:
            return False
        instance = request.refresh_token_instance
        record = ExchangedToken.objects.filter(refresh_token=instance).first()
        setattr(request, _RECORD, record)
        setattr(request, _ISSUED, [])
        if record is None:
            return True
        if record.act is not None and not self._recheck_impersonation(record.act, client, request):
            return False
        # DOT checks the requested resource only when it saves the tokens, after the ID token
        # is minted; check it now, before anything is written (the check is idempotent).
        try:
            self._check_and_set_request_resource(request)
        except errors.OAuth2Error as error:
            if record.act is not None:
                audit.refused(
                    request.token_exchange_context, reason="audience_exceeds_subject", error=error.error
                )
            raise
        return True

    def _refresh_context(self, request: Request, act: dict[str, Any]) -> audit.AuditContext:
        context = audit.AuditContext(
            application=request.client,
            client_ip=audit.client_ip(request.headers),
            grant_type="refresh_token",
            subject=request.user,
            issuer=self.get_oidc_issuer_endpoint(request),
        )
        context.actor = get_user_model()._default_manager.filter(pk=str(act.get("sub"))).first()
        return context

    def _recheck_impersonation(self, act: dict[str, Any], client: Any, request: Request) -> bool:
        """The impersonation rules again, as of now; a refusal is logged and audited."""
        context = self._refresh_context(request, act)
        request.token_exchange_context = context
        reason = impersonation.recheck(
            allowed=SecuritySettings.load().allow_impersonation,
            act=act,
            subject=request.user,
            issuer=context.issuer or "",
        )
        if reason is None:
            return True
        logger.info("Refresh of an impersonated token refused for client %s: %s", client.client_id, reason)
        audit.refused(context, reason=reason, error="invalid_grant")
        return False

    def _validate_resource_uris(self, request: Request, resources: list[str]) -> None:
        # Audience values this server itself bound to the refresh token (client_ids among
        # them) are not client input; only what is left must look like a resource URI.
        record: ExchangedToken | None = getattr(request, _RECORD, None)
        trusted = set(record.audience) if record is not None else set()
        super()._validate_resource_uris(request, [value for value in resources if value not in trusted])

    def _check_and_set_request_resource(self, request: Request) -> None:
        super()._check_and_set_request_resource(request)
        record: ExchangedToken | None = getattr(request, _RECORD, None)
        if record is not None and any(value not in record.audience for value in request.resource):
            raise errors.CustomOAuth2Error(
                error="invalid_target",
                description="A refresh cannot widen the audience of an exchanged token.",
                request=request,
            )

    def _copy_record(self, request: Request, issued_token_type: str, **token: Any) -> None:
        record: ExchangedToken | None = getattr(request, _RECORD, None)
        if record is None:
            return
        # DOT has set request.resource to the refresh token's restriction, or to the narrower
        # one the client asked for (checked above).
        created = ExchangedToken.objects.create(
            jti=uuid.uuid4().hex,
            issued_token_type=issued_token_type,
            audience=list(getattr(request, "resource", None) or []) or record.audience,
            resource=list(getattr(request, "resource", None) or []),
            act=record.act,
            **token,
        )
        getattr(request, _ISSUED).append(created)

    def _save_bearer_token(self, token: dict[str, Any], request: Request, *args: Any, **kwargs: Any) -> Any:
        # DOT runs this inside a transaction on the access token database: the audit row of an
        # impersonated refresh is written, or rolled back, together with the tokens.
        record: ExchangedToken | None = getattr(request, _RECORD, None)
        if record is None or record.act is None:
            return super()._save_bearer_token(token, request, *args, **kwargs)
        cap = token_exchange_settings.IMPERSONATION_TOKEN_EXPIRE_SECONDS
        token["expires_in"] = min(int(token.get("expires_in") or cap), cap)
        result = super()._save_bearer_token(token, request, *args, **kwargs)
        issued: list[ExchangedToken] = getattr(request, _ISSUED)
        if not any(row.issued_token_type == ACCESS_TOKEN_TYPE for row in issued):
            # ROTATE_REFRESH_TOKEN off: DOT updated the access token in place and kept the refresh
            # token, so their existing records name what was issued.
            rt = request.refresh_token_instance
            issued += ExchangedToken.objects.filter(
                Q(refresh_token=rt) | Q(access_token_id=rt.access_token_id)
            )
        audit.issued(
            request.token_exchange_context,
            tokens=issued,
            issued_token_type=ACCESS_TOKEN_TYPE,
            scope=token["scope"],
            audience=list(getattr(request, "resource", None) or []) or record.audience,
            expires_in=token["expires_in"],
            act=record.act,
            using=router.db_for_write(get_access_token_model()),
        )
        return result

    def get_id_token_dictionary(self, token: Any, token_handler: Any, request: Request) -> Any:
        claims, expiration_time = super().get_id_token_dictionary(token, token_handler, request)
        record: ExchangedToken | None = getattr(request, _RECORD, None)
        if record is not None and record.act is not None:
            claims[ACT] = record.act
            # Impersonated ID tokens are as short-lived as impersonated access tokens.
            cap = timezone.now() + datetime.timedelta(
                seconds=token_exchange_settings.IMPERSONATION_TOKEN_EXPIRE_SECONDS
            )
            if expiration_time > cap:
                expiration_time = cap
                claims["exp"] = int(cap.timestamp())
        return claims, expiration_time

    def _save_id_token(self, jti: Any, request: Request, expires: Any, *args: Any, **kwargs: Any) -> Any:
        id_token = super()._save_id_token(jti, request, expires, *args, **kwargs)
        self._copy_record(request, ID_TOKEN_TYPE, id_token=id_token)
        return id_token

    def _create_access_token(
        self, expires: Any, request: Request, token: dict[str, Any], source_refresh_token: Any = None
    ) -> Any:
        access_token = super()._create_access_token(
            expires, request, token, source_refresh_token=source_refresh_token
        )
        self._copy_record(request, ACCESS_TOKEN_TYPE, access_token=access_token)
        return access_token

    def _create_refresh_token(
        self, request: Request, refresh_token_code: str, access_token: Any, previous_refresh_token: Any
    ) -> Any:
        refresh_token = super()._create_refresh_token(
            request, refresh_token_code, access_token, previous_refresh_token
        )
        self._copy_record(request, REFRESH_TOKEN_TYPE, refresh_token=refresh_token)
        return refresh_token
