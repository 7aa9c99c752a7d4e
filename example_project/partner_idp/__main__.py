"""The partner's OpenID provider for the example project, from the command line.

    python -m example_project.partner_idp serve [--port 8002]
    eval "$(python -m example_project.partner_idp login alice --resource http://127.0.0.1:8000/o)"

``serve`` runs it until Ctrl-C, signing with a key kept beside this file (partner-idp-key.json,
made on the first run, so that a restart keeps the keys the demo has fetched). ``login`` signs a
user in at the running provider and prints the tokens as shell variables, PARTNER_ID_TOKEN and
PARTNER_ACCESS_TOKEN, as ``manage.py demo_login`` does for the demo's own users.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

from jwcrypto import jwk

from example_project.partner_idp import (
    DEFAULT_PORT,
    HERE,
    PARTNER_APP,
    ExternalIdP,
    ExternalIdPError,
    default_issuer,
)

KEY_FILE = HERE / "partner-idp-key.json"
# A JWT authorization grant lives five minutes at most here (JWT_BEARER_MAX_LIFETIME_SECONDS):
# the partner's access tokens do too, so that any of them can be one.
ACCESS_TOKEN_TTL = 300
ID_TOKEN_TTL = 600
DEFAULT_SCOPE = "openid email profile"
# With --resource: the resource's own scope too (idp.mjs: api, read, write).
RESOURCE_SCOPE = "api"


def signing_key(path: Path = KEY_FILE) -> dict[str, Any]:
    """The provider's private RSA JWK, made and written on the first run. Its kid is its
    thumbprint: a new key is a new kid, which a server that cached the old keys fetches anew."""
    if not path.exists():
        key = jwk.JWK.generate(kty="RSA", size=2048)
        private: dict[str, Any] = {**key.export_private(as_dict=True), "kid": key.thumbprint()}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.touch(mode=0o600)
        tmp.write_text(json.dumps(private))
        os.replace(tmp, path)  # atomic: two first runs at once agree on one key
    stored: dict[str, Any] = json.loads(path.read_text())
    return stored


def serve(port: int) -> int:
    key = signing_key()
    try:
        idp = ExternalIdP.start(
            keys=[key], port=port, id_token_ttl=ID_TOKEN_TTL, access_token_ttl=ACCESS_TOKEN_TTL
        )
    except ExternalIdPError as exc:
        print(f"The partner's provider did not start: {exc}", file=sys.stderr)
        return 1
    # SIGTERM ends it as Ctrl-C does: the node process is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        describe(idp, key)
        return follow(idp)
    except KeyboardInterrupt:
        return 0
    finally:
        idp.stop()
        print("The partner's provider stopped.", flush=True)


def describe(idp: ExternalIdP, key: dict[str, Any]) -> None:
    issuer = idp.issuer
    lines = [
        f"The partner's OpenID provider (panva's oidc-provider, Node.js) at {issuer}",
        f"  discovery  {issuer}/.well-known/openid-configuration",
        f"  keys       {idp.jwks_uri} (kid {key['kid']}, kept in {os.path.relpath(KEY_FILE)})",
        f"  client     {PARTNER_APP.client_id} / {PARTNER_APP.client_secret}, redirect URI "
        f"{PARTNER_APP.redirect_uri}: the aud of its ID tokens",
        f"  lifetimes  ID tokens {ID_TOKEN_TTL} s, access tokens {ACCESS_TOKEN_TTL} s "
        "(JWTs for a --resource)",
        "  Trusted by the demo as Partner IdP (seed_demo); its user alice is the demo's end-user.",
        f"  Sign alice in: python -m {__package__} login alice --resource <the demo's issuer>",
    ]
    if default_issuer() != issuer:
        lines.append(
            f"  seed_demo trusts {default_issuer()}, not this one: run it, and login, with "
            f"PARTNER_ORIGIN={issuer}."
        )
    lines.append("Ctrl-C stops it.")
    print("\n".join(lines), flush=True)


def follow(idp: ExternalIdP) -> int:
    """Print what the provider writes until it exits; 0 when it was told to stop."""
    assert idp.process is not None
    assert idp.log is not None
    offset = idp.log.stat().st_size
    while True:
        with idp.log.open("rb") as log:
            log.seek(offset)
            text = log.read()
        offset += len(text)
        if text:
            sys.stdout.write(text.decode(errors="replace"))
            sys.stdout.flush()
        status = idp.process.poll()
        if status is not None:
            if status != 0:
                print(f"The partner's provider exited with {status}.", file=sys.stderr)
            return status
        time.sleep(0.5)


def login(
    *, sub: str, issuer: str, resource: str | None, scope: str | None, email: str | None, email_verified: bool
) -> int:
    try:
        idp = ExternalIdP.attach(issuer)
        tokens = idp.login(
            sub=sub,
            scope=scope or (f"{DEFAULT_SCOPE} {RESOURCE_SCOPE}" if resource else DEFAULT_SCOPE),
            resource=resource,
            email=email,
            email_verified=True if email_verified else None,
        )
    except ExternalIdPError as exc:
        print(f"{exc}\nStart the partner's provider with `make partner-idp`.", file=sys.stderr)
        return 1
    for name in ("id_token", "access_token"):
        print(f"export PARTNER_{name.upper()}={shlex.quote(tokens[name])}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=f"python -m {__package__}",
        description="The partner's OpenID provider of the example project (`make partner-idp`).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the provider on 127.0.0.1 until Ctrl-C")
    serve_parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    login_parser = commands.add_parser(
        "login",
        help="sign a user in at the running provider and print its tokens as shell variables: "
        f'eval "$(python -m {__package__} login alice)"',
    )
    login_parser.add_argument("sub", help="the user's subject at the partner, e.g. alice")
    login_parser.add_argument(
        "--resource",
        help="the access token's audience (RFC 8707): a JWT for it, e.g. the demo's issuer for "
        "the JWT authorization grant; without one, an opaque token for the partner's userinfo",
    )
    login_parser.add_argument(
        "--issuer", default=default_issuer(), help="the provider (default: PARTNER_ORIGIN, else %(default)s)"
    )
    login_parser.add_argument(
        "--scope", help=f"default {DEFAULT_SCOPE!r}, and {RESOURCE_SCOPE!r} with a --resource"
    )
    login_parser.add_argument("--email", help="the ID token's email (with the email scope)")
    login_parser.add_argument("--email-verified", action="store_true", help="email_verified: true")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args.port)
    return login(
        sub=args.sub,
        issuer=args.issuer,
        resource=args.resource,
        scope=args.scope,
        email=args.email,
        email_verified=args.email_verified,
    )


if __name__ == "__main__":
    sys.exit(main())
