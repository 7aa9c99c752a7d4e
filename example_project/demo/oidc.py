from __future__ import annotations

from typing import Any

from token_exchange.oauth.validator import TokenExchangeValidator


class DemoValidator(TokenExchangeValidator):
    """Puts the profile and email claims of ZITADEL's example into ID tokens (by scope)."""

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        user = request.user
        return {
            "name": user.get_full_name(),
            "given_name": user.first_name,
            "family_name": user.last_name,
            "preferred_username": user.get_username(),
            "email": user.email,
            "email_verified": bool(user.email),
        }
