"""Identifiers from RFC 8693 and the private URN this package adds."""

from __future__ import annotations

from typing import Final

GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
# RFC 7523 §2.1: a JWT from a trusted issuer as an authorization grant (token_exchange.federation).
JWT_BEARER_GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# RFC 8628 §3.4: the device authorization grant (DOT's), which this package serves and describes.
DEVICE_CODE_GRANT_TYPE: Final = "urn:ietf:params:oauth:grant-type:device_code"

# RFC 8693 §3: token type identifiers.
ACCESS_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:access_token"
REFRESH_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:refresh_token"
ID_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:id_token"
JWT_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"
# Not a token: a Django user's primary key, accepted only together with an actor token
# (ZITADEL's ``urn:zitadel:params:oauth:token-type:user_id`` under our own namespace).
USER_ID_TYPE: Final = "urn:django-token-exchange:params:oauth:token-type:user_id"

KNOWN_TOKEN_TYPES: Final = frozenset(
    {ACCESS_TOKEN_TYPE, REFRESH_TOKEN_TYPE, ID_TOKEN_TYPE, JWT_TYPE, USER_ID_TYPE}
)
# Token types an actor may present (RFC 8693 §2.1 actor_token_type): tokens this server issued.
ACTOR_TOKEN_TYPES: Final = frozenset({ACCESS_TOKEN_TYPE, ID_TOKEN_TYPE})
# Subject token types that are no proof of the subject's consent: only an actor may use them.
ACTOR_ONLY_SUBJECT_TYPES: Final = frozenset({JWT_TYPE, USER_ID_TYPE})
REQUESTABLE_TOKEN_TYPES: Final = frozenset({ACCESS_TOKEN_TYPE, JWT_TYPE, ID_TOKEN_TYPE})

# Not a token type: ExchangedToken.issued_token_type of an authorization code issued under an
# admin-started impersonation (the code carries act to the tokens it is exchanged for).
AUTHORIZATION_CODE: Final = "authorization_code"

# RFC 8693 §2.2.1 token_type values.
BEARER: Final = "Bearer"
NOT_APPLICABLE: Final = "N_A"

# RFC 6749 §3.2 / RFC 8693 §2.1: how a client sends the token endpoint its parameters.
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"

# Parameters that RFC 8693 §2.1 allows to repeat; every other one must appear at most once.
REPEATABLE_PARAMETERS: Final = frozenset({"audience", "resource"})

# Scopes that only ask for data about the subject (OIDC Core §5.4), as opposed to
# authorization scopes that let a token do something.
SUBJECT_DATA_SCOPES: Final = frozenset({"openid", "profile", "email"})
OPENID: Final = "openid"
OFFLINE_ACCESS: Final = "offline_access"

# RFC 9068 §2.1: the media type of JWT access tokens, carried in the JOSE "typ" header.
JWT_ACCESS_TOKEN_TYP: Final = "at+jwt"

# Claim names (RFC 7519, RFC 8693 §4).
ACT: Final = "act"
MAY_ACT: Final = "may_act"

# ImpersonatorGrant roles (ZITADEL's *_ADMIN_IMPERSONATOR and *_END_USER_IMPERSONATOR).
ADMIN_IMPERSONATOR: Final = "admin_impersonator"
END_USER_IMPERSONATOR: Final = "end_user_impersonator"

# RFC 7523 §2.2: client authentication with a JWT (OIDC Core §9 calls it private_key_jwt).
CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
PRIVATE_KEY_JWT: Final = "private_key_jwt"
# Asymmetric JWS algorithms a ClientKey may use (RFC 7518 §3.3-3.5): never "none", never HMAC.
CLIENT_KEY_ALGORITHMS: Final = (
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
)

# Admin-started impersonation obtains at most these scopes unless the client policy says otherwise.
ADMIN_IMPERSONATION_DEFAULT_SCOPE = "openid profile email"

# ClientPolicy.introspection: which tokens a client may introspect (RFC 7662 §4).
INTROSPECT_AUDIENCE = "audience"
INTROSPECT_ANY = "any"
