"""The client's side of ZITADEL's "impersonation by JWT profile", in a few lines of PyJWT.

    python example_project/jwt_profile.py KEY_FILE USER_ID [ISSUER]

KEY_FILE is what `manage.py createclientkey CLIENT_ID` printed; ISSUER defaults to the demo's,
$DEMO_ORIGIN/o (http://127.0.0.1:8000/o), or $OIDC_ISS_ENDPOINT when set, as the server reads
them. Prints two shell variables:
CLIENT_ASSERTION authenticates the client (RFC 7523 §2.2: iss = sub = client_id) and
SUBJECT_JWT names the user to impersonate (iss = client_id, sub = the user). Both are aimed at
the issuer, live five minutes and carry a fresh jti: each is accepted once.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

import jwt


def signed_jwt(key_file: dict[str, str], sub: str, issuer: str) -> str:
    now = int(time.time())
    claims = {
        "iss": key_file["clientId"],
        "sub": sub,
        "aud": issuer,
        "iat": now,
        "exp": now + 300,
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(
        claims, key_file["key"], algorithm=key_file["algorithm"], headers={"kid": key_file["keyId"]}
    )


if __name__ == "__main__":
    path, user_id = sys.argv[1], sys.argv[2]
    demo_issuer = os.environ.get("DEMO_ORIGIN", "http://127.0.0.1:8000").strip().rstrip("/") + "/o"
    issuer = sys.argv[3] if len(sys.argv) > 3 else os.environ.get("OIDC_ISS_ENDPOINT", demo_issuer)
    with open(path) as handle:
        key_file = json.load(handle)
    print(f"export CLIENT_ASSERTION={signed_jwt(key_file, key_file['clientId'], issuer)}")
    print(f"export SUBJECT_JWT={signed_jwt(key_file, user_id, issuer)}")
