"""A project's own Application and token models, swapped in as DOT allows (tests/settings_swapped.py).

Each adds a column DOT does not know (``tenant``) and lives in a table named unlike DOT's and
unlike the ``<app_label>_<model>`` Django would pick. The links between the tokens get reverse
names of their own, as DOT's own swapped test models do: the package may follow a token's
forward relations (``refresh_token.access_token``), never a reverse accessor DOT happens to
name (``access_token.refresh_token``).
"""

from __future__ import annotations

from django.db import models
from oauth2_provider.models import (
    AbstractAccessToken,
    AbstractApplication,
    AbstractGrant,
    AbstractIDToken,
    AbstractRefreshToken,
)
from oauth2_provider.settings import oauth2_settings


class Client(AbstractApplication):
    tenant = models.CharField(max_length=64, default="acme")

    class Meta(AbstractApplication.Meta):
        db_table = "swapped_client_app"


class Token(AbstractAccessToken):
    tenant = models.CharField(max_length=64, default="acme")
    source_refresh_token = models.OneToOneField(
        oauth2_settings.REFRESH_TOKEN_MODEL,
        on_delete=models.SET_NULL,
        blank=True,
        null=True,
        related_name="renewed_token",
    )
    id_token = models.OneToOneField(
        oauth2_settings.ID_TOKEN_MODEL,
        on_delete=models.CASCADE,
        blank=True,
        null=True,
        related_name="bearer_token",
    )

    class Meta(AbstractAccessToken.Meta):
        db_table = "swapped_bearer_token"


class Renewal(AbstractRefreshToken):
    tenant = models.CharField(max_length=64, default="acme")
    access_token = models.OneToOneField(
        oauth2_settings.ACCESS_TOKEN_MODEL,
        on_delete=models.SET_NULL,
        blank=True,
        null=True,
        related_name="renewal",
    )

    class Meta(AbstractRefreshToken.Meta):
        db_table = "swapped_renewal_token"


class Identity(AbstractIDToken):
    tenant = models.CharField(max_length=64, default="acme")

    class Meta(AbstractIDToken.Meta):
        db_table = "swapped_identity_token"


class Code(AbstractGrant):
    tenant = models.CharField(max_length=64, default="acme")

    class Meta(AbstractGrant.Meta):
        db_table = "swapped_authorization_code"
