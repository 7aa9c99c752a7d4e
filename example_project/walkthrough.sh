#!/usr/bin/env bash
# ZITADEL's token exchange examples against `make demo`, at DEMO_ORIGIN (http://127.0.0.1:8000
# unless `make demo HOST=… PORT=…` said otherwise). Paste the commands one by one in a second
# terminal (`make demo` prints them with its origin), or run: bash example_project/walkthrough.sh
# (against `make demo PORT=9000`: DEMO_ORIGIN=http://127.0.0.1:9000 bash example_project/walkthrough.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
# Exported: demo_login mints tokens with this issuer and redirect URI, jwt_profile.py signs for it.
export DEMO_ORIGIN=${DEMO_ORIGIN:-http://127.0.0.1:8000}
PY=.venv/bin/python
TOKEN=$DEMO_ORIGIN/o/token/
EXCHANGE=urn:ietf:params:oauth:grant-type:token-exchange
AT=urn:ietf:params:oauth:token-type:access_token
show() { "$PY" -m json.tool; }
field() { "$PY" -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# 0. The end user logs in to the portal (authorization code flow with PKCE, resource
#    indicators for both APIs): sets ACCESS_TOKEN, ID_TOKEN and REFRESH_TOKEN.
eval "$("$PY" manage.py demo_login end-user)"

# 1. Reduce audience and scope: a token only the aggregates API accepts, with scope openid.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ACCESS_TOKEN" -d subject_token_type=$AT \
  -d scope=openid -d audience=https://aggregates.example.com/ | tee /tmp/narrowed.json | show
NARROWED=$(field access_token < /tmp/narrowed.json)
#    The aggregates API introspects it with its own credentials ...
curl -s -u aggregates:aggregates-secret "$DEMO_ORIGIN/o/introspect/" -d token="$NARROWED" | show
#    ... accepts it, while the settings API refuses it (403).
curl -s "$DEMO_ORIGIN/api/aggregates/" -H "Authorization: Bearer $NARROWED" | show
curl -s -o /dev/null -w "settings API: %{http_code}\n" "$DEMO_ORIGIN/api/settings/" -H "Authorization: Bearer $NARROWED"

# 2. Change the token type: opaque -> JWT (RFC 9068, same scope and audience) ...
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ACCESS_TOKEN" -d subject_token_type=$AT \
  -d requested_token_type=urn:ietf:params:oauth:token-type:jwt | tee /tmp/jwt.json | show
JWT=$(field access_token < /tmp/jwt.json)
#    ... and the JWT back to an opaque token.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$JWT" -d subject_token_type=$AT | show

# 3. Request an ID token: it comes back in access_token, with token_type N_A.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ACCESS_TOKEN" -d subject_token_type=$AT \
  -d requested_token_type=urn:ietf:params:oauth:token-type:id_token | show

# 4. The ID token as subject: an access token with the subject-data scopes only.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ID_TOKEN" -d subject_token_type=urn:ietf:params:oauth:token-type:id_token | show

# 5. Refresh after exchange: offline_access gives a refresh token for the refresh_token grant.
REFRESH=$(field refresh_token < /tmp/jwt.json)
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=refresh_token -d refresh_token="$REFRESH" | show

# 6. A refused exchange: an audience the subject token never had.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ACCESS_TOKEN" -d subject_token_type=$AT \
  -d audience=https://evil.example.com/ | show

# --- Impersonation (the guide's second half). seed_demo turned "Allow impersonation" on and made
#     `support` an Org End User Impersonator of ACME, the end user's organization.
# 7. The impersonator logs in to the portal: sets ACTOR_ACCESS_TOKEN, ACTOR_ID_TOKEN, ...
eval "$("$PY" manage.py demo_login support --prefix ACTOR_)"
UID_TYPE=urn:django-token-exchange:params:oauth:token-type:user_id

# 8. Delegation by token: the end user's token as subject, the impersonator's as actor, a JWT
#    back. Its claims carry act = {iss, sub: the impersonator}.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ACCESS_TOKEN" -d subject_token_type=$AT \
  -d actor_token="$ACTOR_ACCESS_TOKEN" -d actor_token_type=$AT \
  -d requested_token_type=urn:ietf:params:oauth:token-type:jwt | tee /tmp/delegated.json | show
"$PY" -c "import base64,json,sys; p=sys.argv[1].split('.')[1]; print(json.dumps(json.loads(base64.urlsafe_b64decode(p+'=='*2)), indent=2))" \
  "$(field access_token < /tmp/delegated.json)"

# 9. Impersonation by user ID (no token of the customer needed), with profile and email for
#    the ID token, and offline_access for a refresh token.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$USER_ID" -d subject_token_type=$UID_TYPE \
  -d actor_token="$ACTOR_ACCESS_TOKEN" -d actor_token_type=$AT \
  -d requested_token_type=urn:ietf:params:oauth:token-type:jwt \
  -d scope="openid profile email offline_access" | tee /tmp/impersonated.json | show

# 10. The ID token as subject, an opaque token back: subject data from the ID token, read
#     from the actor token.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ID_TOKEN" -d subject_token_type=urn:ietf:params:oauth:token-type:id_token \
  -d actor_token="$ACTOR_ACCESS_TOKEN" -d actor_token_type=$AT \
  -d scope="openid email read" | tee /tmp/by-id-token.json | show
OPAQUE=$(field access_token < /tmp/by-id-token.json)
#     Introspection shows act; the aggregates API accepts the token and reports act ...
curl -s -u aggregates:aggregates-secret "$DEMO_ORIGIN/o/introspect/" -d token="$OPAQUE" | show
curl -s "$DEMO_ORIGIN/api/aggregates/" -H "Authorization: Bearer $OPAQUE" | show
#     ... and the privileged settings API refuses every impersonated token (403).
curl -s -w "\nsettings API: %{http_code}\n" "$DEMO_ORIGIN/api/settings/" -H "Authorization: Bearer $OPAQUE"

# 11. Refresh the impersonated token: the policy is checked again, the new tokens keep act.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=refresh_token \
  -d refresh_token="$(field refresh_token < /tmp/impersonated.json)" | show

# 12. Refused: an end-user impersonator may not impersonate an admin (400 invalid_request,
#     generic description; the reason is in the log and in Admin > Audit events).
eval "$("$PY" manage.py demo_login admin --prefix ADMIN_)"
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ADMIN_USER_ID" -d subject_token_type=$UID_TYPE \
  -d actor_token="$ACTOR_ACCESS_TOKEN" -d actor_token_type=$AT | show

# --- Impersonation by JWT profile (the guide's last example): no client secret, the portal signs.
# 13. A key pair for the portal: the public key is stored, the private key written once, here
#     (--force: replacing the key file of an earlier run of this walkthrough).
"$PY" manage.py createclientkey portal --output /tmp/portal-key.json --force
#     With PyJWT (example_project/jwt_profile.py, a dozen lines): a client assertion (iss = sub =
#     portal) and a subject JWT (iss = portal, sub = the end user), both for aud = the issuer.
eval "$("$PY" example_project/jwt_profile.py /tmp/portal-key.json "$USER_ID")"
JWT_BEARER=urn:ietf:params:oauth:client-assertion-type:jwt-bearer
curl -s "$TOKEN" -d grant_type=$EXCHANGE \
  -d client_assertion_type=$JWT_BEARER -d client_assertion="$CLIENT_ASSERTION" \
  -d subject_token="$SUBJECT_JWT" -d subject_token_type=urn:ietf:params:oauth:token-type:jwt \
  -d actor_token="$ACTOR_ACCESS_TOKEN" -d actor_token_type=$AT \
  -d requested_token_type=urn:ietf:params:oauth:token-type:jwt \
  -d scope="openid profile email" | show

# 14. The same assertion again: refused with 401 invalid_client, its jti is spent.
curl -s -w "\nstatus: %{http_code}\n" "$TOKEN" -d grant_type=client_credentials \
  -d client_assertion_type=$JWT_BEARER -d client_assertion="$CLIENT_ASSERTION"

# --- A resource server in another process (`make resource-server` in a third terminal, port
#     8001): the aggregates API verifying tokens by introspection (/introspected/...) and offline
#     as RFC 9068 JWTs (/jwt/...). Skipped when it is not running.
RS=${RS_ORIGIN:-http://127.0.0.1:8001}
JWT_TYPE=urn:ietf:params:oauth:token-type:jwt
if curl -s -o /dev/null --max-time 3 "$RS/jwt/aggregates/"; then
# 15. An exchanged JWT for the aggregates API is accepted in both modes (act null); the settings
#     endpoint takes it too, since no one is acting.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ACCESS_TOKEN" -d subject_token_type=$AT -d requested_token_type=$JWT_TYPE \
  -d audience=https://aggregates.example.com/ -d scope="openid read" | tee /tmp/for-aggregates.json | show
FOR_AGGREGATES=$(field access_token < /tmp/for-aggregates.json)
curl -s "$RS/introspected/aggregates/" -H "Authorization: Bearer $FOR_AGGREGATES" | show
curl -s "$RS/jwt/settings/" -H "Authorization: Bearer $FOR_AGGREGATES" | show
# 16. An impersonated token: the aggregates API shows act; the settings endpoint refuses it (403),
#     whether it introspects or verifies offline.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$USER_ID" -d subject_token_type=$UID_TYPE \
  -d actor_token="$ACTOR_ACCESS_TOKEN" -d actor_token_type=$AT -d requested_token_type=$JWT_TYPE \
  -d audience=https://aggregates.example.com/ -d scope="openid read" | tee /tmp/rs-impersonated.json | show
IMPERSONATED=$(field access_token < /tmp/rs-impersonated.json)
curl -s "$RS/jwt/aggregates/" -H "Authorization: Bearer $IMPERSONATED" | show
curl -s -w "\nintrospected settings: %{http_code}\n" "$RS/introspected/settings/" -H "Authorization: Bearer $IMPERSONATED"
curl -s -w "\njwt settings: %{http_code}\n" "$RS/jwt/settings/" -H "Authorization: Bearer $IMPERSONATED"
# 17. A token for another audience (the settings API's) is refused in both modes: 401 invalid_token.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$ACCESS_TOKEN" -d subject_token_type=$AT -d requested_token_type=$JWT_TYPE \
  -d audience=https://settings.example.com/ -d scope="openid read" | tee /tmp/for-settings.json | show
FOR_SETTINGS=$(field access_token < /tmp/for-settings.json)
curl -s -D - -o /dev/null "$RS/jwt/aggregates/" -H "Authorization: Bearer $FOR_SETTINGS" | grep -i -e '^HTTP' -e '^www-authenticate'
curl -s -D - -o /dev/null "$RS/introspected/aggregates/" -H "Authorization: Bearer $FOR_SETTINGS" | grep -i -e '^HTTP' -e '^www-authenticate'
else
  echo "(steps 15-17: start the resource server with 'make resource-server' and run them again)"
fi

# --- Tokens from another identity provider (`make partner-idp` in another terminal, port 8002):
#     seed_demo trusts it as "Partner IdP" for the portal, its user alice being the end user.
#     Skipped when it is not running.
JWT_GRANT=urn:ietf:params:oauth:grant-type:jwt-bearer
# 18. alice signs in at the partner (its own code flow), asking for an access token for this
#     server (a JWT signed by the partner, aud = our issuer): sets PARTNER_ID_TOKEN and
#     PARTNER_ACCESS_TOKEN.
if PARTNER_LOGIN=$("$PY" -m example_project.partner_idp login alice --resource "$DEMO_ORIGIN/o"); then
eval "$PARTNER_LOGIN"
# 19. The partner's ID token as subject: a token of ours for the end user, for the aggregates API
#     (a resource the trusted issuer allows) with scope read; the API accepts it.
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$EXCHANGE \
  -d subject_token="$PARTNER_ID_TOKEN" -d subject_token_type=urn:ietf:params:oauth:token-type:id_token \
  -d audience=https://aggregates.example.com/ -d scope=read | tee /tmp/from-partner.json | show
FROM_PARTNER=$(field access_token < /tmp/from-partner.json)
curl -s "$DEMO_ORIGIN/api/aggregates/" -H "Authorization: Bearer $FROM_PARTNER" | show
# 20. The partner's access token as a JWT authorization grant (RFC 7523): a token of ours ...
curl -s -u portal:portal-secret "$TOKEN" -d grant_type=$JWT_GRANT \
  -d assertion="$PARTNER_ACCESS_TOKEN" -d scope=read | show
#     ... once: the same assertion again is refused (400 invalid_grant), its jti is spent.
curl -s -w "\nstatus: %{http_code}\n" -u portal:portal-secret "$TOKEN" -d grant_type=$JWT_GRANT \
  -d assertion="$PARTNER_ACCESS_TOKEN" -d scope=read
else
  echo "(steps 18-20: start the partner's provider with 'make partner-idp' and run them again)"
fi
