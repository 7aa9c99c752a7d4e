"""``manage.py createclientkey CLIENT_ID``: a key pair for private_key_jwt and self-signed JWTs.

Stores the public key as a ``ClientKey`` and prints the private key once, as a JSON key file in
the shape of ZITADEL's application keys. The server never keeps the private key: lose the file
and you create a new key.
"""

from __future__ import annotations

import datetime
import json
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import router, transaction
from django.utils import timezone
from oauth2_provider.models import get_application_model

from token_exchange.client_keys import generate_key_pair
from token_exchange.constants import CLIENT_KEY_ALGORITHMS
from token_exchange.models import ClientKey


class Command(BaseCommand):
    help = (
        "Generate a key pair for a confidential client, store the public key and print the "
        "private key once as a JSON key file (keyId, key, algorithm, clientId)."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("client_id", help="client_id of a confidential DOT application")
        parser.add_argument("--algorithm", choices=CLIENT_KEY_ALGORITHMS, default="RS256")
        parser.add_argument("--kid", help="key ID (default: the key's RFC 7638 JWK thumbprint)")
        parser.add_argument("--expires-in-days", type=int, help="the key stops verifying after this")
        parser.add_argument(
            "--output", help="write the key file here (created with mode 0600, never overwritten)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        client_id: str = options["client_id"]
        application = get_application_model().objects.filter(client_id=client_id).first()
        if application is None:
            raise CommandError(f"No application with client_id {client_id!r}.")
        if application.client_type != application.CLIENT_CONFIDENTIAL:
            raise CommandError("Only confidential clients authenticate with keys.")
        days = options["expires_in_days"]
        if days is not None and days <= 0:
            raise CommandError("--expires-in-days must be positive.")

        pair = generate_key_pair(options["algorithm"])
        kid = options["kid"] or pair.kid
        if ClientKey.objects.filter(application=application, kid=kid).exists():
            raise CommandError(f"The client already has a key {kid!r}.")
        key_file = json.dumps(
            {
                "type": "application",
                "keyId": kid,
                "key": pair.private_pem,
                "algorithm": options["algorithm"],
                "clientId": application.client_id,
            },
            indent=2,
        )
        # The key's database, which a router may have made another than "default".
        with transaction.atomic(using=router.db_for_write(ClientKey)):
            key = ClientKey(
                application=application,
                kid=kid,
                public_key=pair.public_pem,
                algorithm=options["algorithm"],
                expires_at=timezone.now() + datetime.timedelta(days=days) if days else None,
            )
            key.full_clean()
            key.save()
            output = options["output"]
            if output:
                # O_EXCL: an existing file (perhaps another key) is never overwritten.
                try:
                    descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except OSError as exc:
                    raise CommandError(f"Cannot create {output}: {exc.strerror}.") from exc
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(key_file + "\n")
                self.stderr.write(f"Key {kid} for {application.client_id} written to {output}.")
            else:
                self.stdout.write(key_file)
