"""``manage.py createclientkey CLIENT_ID``: a key pair for private_key_jwt and self-signed JWTs.

Stores the public key as a ``ClientKey`` and prints the private key once, as a JSON key file in
the shape of ZITADEL's application keys. The server never keeps the private key: lose the file
and you create a new key.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import tempfile
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
            "--output",
            help="write the key file here (mode 0600); an existing file is refused unless --force",
        )
        parser.add_argument(
            "--force",
            action="store_true",
            help="with --output: replace an existing file (the private key it held is lost)",
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
        output: str | None = options["output"]
        force: bool = options["force"]
        if force and not output:
            raise CommandError("--force replaces the file named by --output; there is none.")
        if output:
            # Before a key is made: a refused path stores nothing and costs nothing.
            _check_output(output, force=force)

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
        using = router.db_for_write(ClientKey)
        # A file this run wrote that holds the private key of a key not yet committed.
        written: str | None = None
        try:
            with transaction.atomic(using=using):
                key = ClientKey(
                    application=application,
                    kid=kid,
                    public_key=pair.public_pem,
                    algorithm=options["algorithm"],
                    expires_at=timezone.now() + datetime.timedelta(days=days) if days else None,
                )
                key.full_clean()
                key.save()
                if not output:
                    self.stdout.write(key_file)
                    return
                # Written and synced inside the transaction: a file that cannot be written
                # stores no key. With --force it is a temporary file, renamed below.
                written = _write_key_file(output, key_file + "\n", force=force)
        except BaseException:
            # Not committed (a failed write, or a failed commit): a key file for no stored key
            # would be refused as "already exists" next time, and the file --force would have
            # replaced is still in place.
            if written is not None:
                _discard(written)
            raise
        if force:
            # Only now that the key is stored may the old file go: a commit that failed above
            # left it in place.
            try:
                _replace(written, output)
            except CommandError:
                # No file holds the private key of the stored key: take the key back, so a
                # refused write still stores no key.
                key.delete()
                raise
        self.stderr.write(f"Key {kid} for {application.client_id} written to {output}.")


def _exists_message(output: str) -> str:
    return (
        f"{output} already exists. It may hold another key's private key, which the server does "
        "not keep and cannot give back. Choose another --output path, or add --force to replace "
        "the file."
    )


def _check_output(output: str, *, force: bool) -> None:
    """Refuse, with what to do instead, a path the key file cannot or should not be written to."""
    if os.path.isdir(output):
        raise CommandError(
            f"{output} is a directory: name the key file, e.g. {os.path.join(output, 'key.json')}."
        )
    if os.path.lexists(output) and not force:
        raise CommandError(_exists_message(output))
    directory = os.path.dirname(output) or "."
    if not os.path.isdir(directory):
        raise CommandError(f"Cannot create {output}: the directory {directory} does not exist.")


def _write_key_file(output: str, content: str, *, force: bool) -> str:
    """Write the private key readable by its owner only (0600), never through a symlink, and
    return the file written: ``output``, or with ``force`` a temporary file for ``_replace``.

    Without ``force``, O_EXCL creates the file or fails, so a file that appeared since
    ``_check_output`` is still not overwritten. With ``force``, a new 0600 file in the same
    directory replaces the old one in one rename once the key is stored: never a moment with the
    key in a file that others could read (the old file's mode), nor a half-written key file. The
    content is synced before the rename, so a crash cannot leave the new name on an empty file.
    A file that could not be written whole is removed: a truncated private key is no key.
    """
    try:
        if force:
            descriptor, path = tempfile.mkstemp(
                dir=os.path.dirname(output) or ".", prefix=".key-", suffix=".tmp"
            )
        else:
            path = output
            descriptor = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise CommandError(_exists_message(output)) from exc
    except OSError as exc:
        raise CommandError(f"Cannot create {output}: {exc.strerror}.") from exc
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException as exc:
        _discard(path)
        if isinstance(exc, OSError):
            raise CommandError(f"Cannot create {output}: {exc.strerror}.") from exc
        raise
    return path


def _replace(temporary: str, output: str) -> None:
    """Put the synced temporary key file in ``output``'s place, or remove it and say why."""
    try:
        os.replace(temporary, output)
    except OSError as exc:
        _discard(temporary)
        raise CommandError(f"Cannot create {output}: {exc.strerror}.") from exc
    # The rename itself lasts once the directory is synced; where a directory cannot be opened
    # or synced (some platforms and file systems), the rename is done all the same.
    with contextlib.suppress(OSError):
        directory = os.open(os.path.dirname(output) or ".", os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def _discard(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
