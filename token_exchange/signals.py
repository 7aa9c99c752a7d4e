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
