"""Signals of the token exchange app.

Each is sent with ``sender=AuditEvent`` and ``event=<the AuditEvent row>``, only after the
transaction that wrote the row has committed, so a receiver never hears of a token that was
rolled back. Receivers that raise are logged (``token_exchange`` logger) and do not change the
response: the tokens already exist. Use them to notify the customer or feed a SIEM.
"""

from __future__ import annotations

from django.dispatch import Signal

# A token was issued to an actor for a subject. kwargs: event (AuditEvent "user.impersonated").
user_impersonated = Signal()

# An exchange succeeded, with or without an actor. kwargs: event (AuditEvent "token.exchanged").
token_exchanged = Signal()

# An authenticated client's exchange (or refresh of an impersonated token) was refused.
# kwargs: event (AuditEvent "token.exchange_refused"; payload["reason"] is the reason code).
token_exchange_refused = Signal()

# A support user started impersonating a customer from the admin.
# kwargs: event (AuditEvent "impersonation.started"; payload["reason"], payload["expires_at"]).
impersonation_started = Signal()

# An admin-started impersonation ended (stopped, expired, replaced or no longer allowed) and its
# tokens were revoked. kwargs: event (AuditEvent "impersonation.ended").
impersonation_ended = Signal()

# Someone changed "Token exchange enabled" or "Allow impersonation".
# kwargs: event (AuditEvent "security_settings.changed"; payload["old"], payload["new"]).
security_settings_changed = Signal()

# Someone granted, changed or withdrew an impersonator role. kwargs: event (AuditEvent
# "impersonator_grant.changed"; payload["action"], payload["before"], payload["after"]).
impersonator_grant_changed = Signal()

# A client key was added, changed, activated, deactivated or deleted.
# kwargs: event (AuditEvent "client_key.changed").
client_key_changed = Signal()

# A client policy was created, changed or deleted. kwargs: event (AuditEvent "client_policy.changed").
client_policy_changed = Signal()

# A trusted issuer was added, changed or deleted. kwargs: event (AuditEvent "trusted_issuer.changed").
trusted_issuer_changed = Signal()

# A linked identity (a trusted issuer's subject as a local user) was added, changed or deleted.
# kwargs: event (AuditEvent "federated_identity.changed").
federated_identity_changed = Signal()

# A security-relevant field of an application changed (client type, secret, redirect URIs, grant
# type, ...), or one was created or deleted. kwargs: event (AuditEvent "application.changed"; a
# secret is only ever reported as changed, never shown).
application_changed = Signal()

# Tokens issued under an authorization that ended (an actor's revoked tokens, a deactivated
# actor) were revoked with it. kwargs: event (AuditEvent "tokens.revoked"; payload["revoked"]).
tokens_revoked = Signal()

# A client's refused exchanges crossed TOKEN_EXCHANGE["THROTTLE_REFUSALS"] in one window: further
# requests get 429 until the window ends. Sent once per window. kwargs: event (AuditEvent
# "token.exchange_throttled").
token_exchange_throttled = Signal()

# A user's powers over impersonation changed: is_active, is_staff, is_superuser, or (with the
# default organizations, auth groups) the groups they belong to. kwargs: event (AuditEvent
# "user.changed"; payload["before"], payload["after"]).
user_changed = Signal()
