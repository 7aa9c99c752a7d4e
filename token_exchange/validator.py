"""DOT's request validator, taught to refresh exchanged tokens without losing their claims.

An exchanged token's audience may name clients as well as RFC 8707 resource URIs, and it may
carry ``act``. When the refresh_token grant rotates such a token, the new access and refresh
tokens keep the audience, resource restriction and ``act`` of the old one, and a refresh may
narrow the audience but never widen it.
"""

from __future__ import annotations

import uuid
from typing import Any

from oauth2_provider.oauth2_validators import OAuth2Validator
from oauthlib.common import Request
from oauthlib.oauth2.rfc6749 import errors

from .constants import ACCESS_TOKEN_TYPE, REFRESH_TOKEN_TYPE
from .models import ExchangedToken

_RECORD = "token_exchange_refreshed"


class TokenExchangeValidator(OAuth2Validator):  # type: ignore[misc]
    def validate_refresh_token(
        self, refresh_token: str, client: Any, request: Request, *args: Any, **kwargs: Any
    ) -> bool:
        valid: bool = super().validate_refresh_token(refresh_token, client, request, *args, **kwargs)
        if valid:
            instance = request.refresh_token_instance
            setattr(request, _RECORD, ExchangedToken.objects.filter(refresh_token=instance).first())
        return valid

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
        ExchangedToken.objects.create(
            jti=uuid.uuid4().hex,
            issued_token_type=issued_token_type,
            audience=list(request.resource) or record.audience,
            resource=list(request.resource),
            act=record.act,
            **token,
        )

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
