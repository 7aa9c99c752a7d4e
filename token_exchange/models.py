"""Models of the token exchange app.

``SecuritySettings`` and ``ClientPolicy`` are public API. ``ExchangedToken`` keeps what DOT's
token tables have no column for (the RFC 8693 audience, the ``act`` claim, a ``jti``) for every
access and refresh token that an exchange, or a refresh of an exchanged token, issues.
"""

from __future__ import annotations

from typing import Any

import django
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from oauth2_provider.settings import oauth2_settings


def check_constraint(condition: Q, name: str) -> models.CheckConstraint:
    """``CheckConstraint`` took ``check=`` until Django 5.1 and takes ``condition=`` from 6.0."""
    if django.VERSION >= (5, 1):
        return models.CheckConstraint(condition=condition, name=name)
    return models.CheckConstraint(check=condition, name=name)  # type: ignore[call-arg]


class SecuritySettings(models.Model):
    """Instance-wide switches; exactly one row, read fresh on every request."""

    SINGLETON_PK = 1

    token_exchange_enabled = models.BooleanField(
        _("token exchange enabled"),
        default=True,
        help_text=_(
            "When off, the token endpoint answers every token exchange request with "
            "unsupported_grant_type, whatever each client's policy says."
        ),
    )
    allow_impersonation = models.BooleanField(
        _("allow impersonation"),
        default=False,
        help_text=_(
            "When on, users holding an impersonator role may obtain tokens for other users "
            "without their password. Every such token carries an act claim and is audited."
        ),
    )
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        verbose_name = _("security settings")
        verbose_name_plural = _("security settings")

    def __str__(self) -> str:
        return str(_("Security settings"))

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = self.SINGLETON_PK
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        raise TypeError("SecuritySettings is a singleton and cannot be deleted.")

    @classmethod
    def load(cls) -> SecuritySettings:
        """Return the one row, creating it with the defaults on first use.

        No per-process cache: a change in the admin takes effect on the next request in every
        process, at the price of one primary-key lookup per token exchange.
        """
        obj, _created = cls.objects.get_or_create(pk=cls.SINGLETON_PK)
        return obj


class ClientPolicy(models.Model):
    """What one DOT application may do with token exchange. No row means: nothing."""

    application = models.OneToOneField(
        oauth2_settings.APPLICATION_MODEL,
        on_delete=models.CASCADE,
        related_name="token_exchange_policy",
        verbose_name=_("application"),
    )
    token_exchange_enabled = models.BooleanField(
        _("token exchange enabled"),
        default=False,
        help_text=_(
            "Allow this client to use the urn:ietf:params:oauth:grant-type:token-exchange grant. "
            "Enable it only for confidential clients you trust with every token they hold."
        ),
    )

    class Meta:
        verbose_name = _("client policy")
        verbose_name_plural = _("client policies")
        ordering = ["application_id"]

    def __str__(self) -> str:
        return str(_("Token exchange policy of %(application)s") % {"application": self.application})


class ExchangedToken(models.Model):
    """The RFC 8693 claims of one access, refresh or ID token issued by this app.

    DOT's token tables have no column for the exchanged audience, the ``act`` claim or a ``jti``;
    this row keeps them, so that introspection, a later exchange and a refresh all see the same
    values. It dies with its token (``CASCADE``) and never holds a token value.
    """

    access_token = models.OneToOneField(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exchanged",
        verbose_name=_("access token"),
    )
    refresh_token = models.OneToOneField(
        oauth2_settings.REFRESH_TOKEN_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exchanged",
        verbose_name=_("refresh token"),
    )
    id_token = models.OneToOneField(
        oauth2_settings.ID_TOKEN_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="exchanged",
        verbose_name=_("ID token"),
    )
    jti = models.CharField(_("JWT ID"), max_length=64, unique=True)
    issued_token_type = models.CharField(_("issued token type"), max_length=128)
    audience = models.JSONField(_("audience"), default=list)
    # The part of the audience that DOT's resource servers check (RFC 8707): what the token was
    # restricted to. Empty means unrestricted, as for the subject token it was derived from.
    resource = models.JSONField(_("resource"), default=list)
    act = models.JSONField(_("actor"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("exchanged token")
        verbose_name_plural = _("exchanged tokens")
        ordering = ["-created_at"]
        constraints = [
            check_constraint(
                Q(access_token__isnull=False, refresh_token__isnull=True, id_token__isnull=True)
                | Q(access_token__isnull=True, refresh_token__isnull=False, id_token__isnull=True)
                | Q(access_token__isnull=True, refresh_token__isnull=True, id_token__isnull=False),
                name="token_exchange_exchangedtoken_one_token",
            )
        ]

    def __str__(self) -> str:
        return f"{self.issued_token_type} {self.jti}"
