"""JWTs a client signs (RFC 7523): compact JWS (``jose``), client assertions
(``client_assertion``), self-signed subject JWTs (``signed_jwt``) and the one-use ``jti`` store
(``replay``). The keys they are verified with are ``token_exchange.client_keys``.
"""
