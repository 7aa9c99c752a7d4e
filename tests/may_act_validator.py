"""A site's validator that lets only the user named "support" act for anyone (RFC 8693 §4.4)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from example_project.demo.oidc import DemoValidator


class MayActValidator(DemoValidator):
    oidc_claim_scope = {**DemoValidator.oidc_claim_scope, "may_act": "openid"}

    def get_additional_claims(self, request: Any) -> dict[str, Any]:
        claims = super().get_additional_claims(request)
        support = get_user_model().objects.filter(username="support").first()
        if support is not None:
            claims["may_act"] = {"sub": str(support.pk)}
        return claims
