"""``manage.py export_client_jwks [CLIENT_ID ...] [--write]``: ``ClientKey`` rows as the RFC 7517
JWK Set that django-oauth-toolkit's own ``private_key_jwt`` reads from ``Application.client_jwks``.

Prints ``{"<client_id>": {"keys": [...]}, ...}``: each client's active, unexpired keys with
``kid``, ``alg`` and ``use: sig``, public members only. ``--write`` also stores each non-empty
set in the client's ``client_jwks`` and sets its ``token_endpoint_auth_method`` to
``private_key_jwt`` (DOT accepts assertions only from clients registered so, and then no longer
accepts their secret); a ``client_jwks`` that already holds other keys is left alone unless
``--replace``. That needs a DOT whose application model has those fields (its main
branch after 3.4.1); on 3.4.1 the command prints only. See docs/dot-compatibility.md.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.core.management.base import BaseCommand, CommandError
from django.db import router, transaction
from oauth2_provider.models import get_application_model

from token_exchange.constants import PRIVATE_KEY_JWT
from token_exchange.jwt.signed_jwt import application_jwks
from token_exchange.models import ClientKey

# DOT main's Application fields (migration 0024_application_client_assertion_fields).
JWKS_FIELD = "client_jwks"
JWKS_URI_FIELD = "client_jwks_uri"
METHOD_FIELD = "token_endpoint_auth_method"


def dot_has_client_jwks() -> bool:
    """Does the application model have DOT's ``client_jwks`` and ``token_endpoint_auth_method``?"""
    meta = get_application_model()._meta
    try:
        meta.get_field(JWKS_FIELD)
        meta.get_field(METHOD_FIELD)
    except FieldDoesNotExist:
        return False
    return True


def changes(application: Any, key_set: dict[str, Any], *, replace: bool = False) -> dict[str, str] | str:
    """The fields to write on ``application`` for ``key_set``, or why nothing is written. Pure.

    DOT refuses a client with both ``client_jwks`` and ``client_jwks_uri``, an empty key set,
    and ``private_key_jwt`` for a public client; a client registered for ``client_secret_jwt``
    chose another method, which is not ours to change. Keys already in ``client_jwks`` (registered
    with DOT directly, say) are not overwritten by a different set unless ``replace``.
    """
    if not key_set["keys"]:
        return "no active, unexpired key"
    if application.client_type != application.CLIENT_CONFIDENTIAL:
        return "not a confidential client"
    if getattr(application, JWKS_URI_FIELD, ""):
        return f"it has a {JWKS_URI_FIELD} (DOT takes one key source only)"
    current = getattr(application, JWKS_FIELD, "")
    if current and not replace:
        try:
            same = json.loads(current) == key_set
        except ValueError:
            same = False
        if not same:
            return f"it already has other keys in {JWKS_FIELD} (--replace overwrites them)"
    method = getattr(application, METHOD_FIELD, "")
    if method not in ("", "client_secret_basic", "client_secret_post", PRIVATE_KEY_JWT):
        return f"it is registered for {method}"
    return {JWKS_FIELD: json.dumps(key_set), METHOD_FIELD: PRIVATE_KEY_JWT}


class Command(BaseCommand):
    help = (
        "Print the clients' active, unexpired ClientKey rows as RFC 7517 JWK Sets (kid, alg, "
        "use=sig), the form of django-oauth-toolkit's Application.client_jwks; with --write, "
        "store them there and register the clients for private_key_jwt."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "client_ids", nargs="*", metavar="CLIENT_ID", help="default: every client with a ClientKey"
        )
        parser.add_argument(
            "--write",
            action="store_true",
            help="store each set in client_jwks and set token_endpoint_auth_method=private_key_jwt "
            "(needs a DOT with those fields)",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help=f"with --write, overwrite a {JWKS_FIELD} that already holds other keys",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["write"] and not dot_has_client_jwks():
            raise CommandError(
                "The installed django-oauth-toolkit's application model has no client_jwks field "
                "(3.4.1 and older): run without --write to print the key sets."
            )
        Application = get_application_model()
        client_ids: list[str] = options["client_ids"]
        if client_ids:
            found = {app.client_id: app for app in Application.objects.filter(client_id__in=client_ids)}
            missing = [client_id for client_id in client_ids if client_id not in found]
            if missing:
                raise CommandError(f"No application with client_id {', '.join(map(repr, missing))}.")
            applications = [found[client_id] for client_id in dict.fromkeys(client_ids)]
        else:
            with_keys = ClientKey.objects.values("application_id")
            applications = list(Application.objects.filter(pk__in=with_keys).order_by("client_id"))

        key_sets = {app.client_id: application_jwks(app) for app in applications}
        self.stdout.write(json.dumps(key_sets, indent=2))
        if not options["write"]:
            return
        with transaction.atomic(using=router.db_for_write(Application)):
            for application in applications:
                fields = changes(application, key_sets[application.client_id], replace=options["replace"])
                if isinstance(fields, str):
                    self.stderr.write(f"{application.client_id}: not written, {fields}.")
                    continue
                for name, value in fields.items():
                    setattr(application, name, value)
                application.save(update_fields=list(fields))
                count = len(key_sets[application.client_id]["keys"])
                self.stderr.write(f"{application.client_id}: {count} key(s) written to {JWKS_FIELD}.")
