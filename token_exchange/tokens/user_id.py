"""``urn:django-token-exchange:params:oauth:token-type:user_id``: a Django user's primary key.

Not a token and no proof of anything: the grant accepts it only beside an actor token, and the
impersonation rules decide whether that actor may act for this user. It carries no scope, no
audience and no expiry of its own.
"""

from __future__ import annotations

import re

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import models

from token_exchange.db.lookups import PreparedLookup
from token_exchange.exceptions import Refusal
from token_exchange.parameters import storable
from token_exchange.tokens.base import VerifiedToken

_BY_PK = PreparedLookup(lambda: get_user_model()._default_manager.all(), "pk")

# One spelling per user: int() would also read "1_0", " 2", "01" or non-ASCII digits.
_INTEGER = re.compile(r"0|[1-9][0-9]{0,19}")


def read_user_id(value: str, token_type: str, refusal: type[Refusal]) -> VerifiedToken:
    User = get_user_model()
    if not storable(value):
        raise refusal("malformed_user_id")
    if isinstance(User._meta.pk, models.IntegerField) and not _INTEGER.fullmatch(value):
        raise refusal("malformed_user_id")
    try:
        pk = User._meta.pk.to_python(value) if User._meta.pk is not None else value
        user = _BY_PK.get(pk)
    except (ValidationError, ValueError, TypeError, OverflowError) as exc:
        raise refusal("malformed_user_id") from exc
    if user is None:
        raise refusal("unknown_user")
    if not user.is_active:
        raise refusal("inactive_user")
    return VerifiedToken(
        token_type=token_type,
        user=user,
        client_id=None,
        scope=frozenset(),
        audience=(),
        resource=(),
        expires=None,
        reference=f"user:{user.pk}",
    )
