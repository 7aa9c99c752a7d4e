"""Tokens from other identity providers, under trust an admin sets (docs/federation.md).

``rules`` holds the pure decisions about a token's header, kind and claims; ``jwks``
gets an issuer's keys (fetched, cached and shared, never from a token's header); ``assertion``
finds the row a client may present tokens of and verifies one token; ``identities`` finds the
local user a verified subject stands for; ``withdrawal`` revokes what was issued when trust is
taken away. The readers (``token_exchange.tokens.external``) and the JWT authorization grant
(``token_exchange.jwt_bearer``) use them; nothing here issues a token.
"""
