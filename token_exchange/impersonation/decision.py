"""The one impersonation decision, for every entry point.

An exchange with an actor token, a re-exchange or refresh of an impersonated token, the code of
an admin-started impersonation, every later use of a token issued under one, and the admin's
Impersonate button all ask here, and get the same answer from the same facts:

1. **facts**, gathered once (``gather``): the instance switch, the subject and every actor its
   ``act`` chain names (``impersonation``), ``may_act``, and the admin-started session behind
   the token, if any (``impersonation_sessions``);
2. **the rule**, pure: ``policy.impersonation_decision`` (a truth table in the tests);
3. **the consequence**: a refused session ends, and what was issued under it is revoked
   (``impersonation_sessions.end_refused``), before the refusal is answered.

The refusal's audit row is the caller's pipeline's: the grant's ``refuse`` for the token
exchange, the validator for refresh and code redemption, the authorization view for a code.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from token_exchange.impersonation import facts as impersonation
from token_exchange.impersonation import sessions as impersonation_sessions
from token_exchange.models import ImpersonationSession, SecuritySettings
from token_exchange.policy import ImpersonationFacts, Party, impersonation_decision

__all__ = ["gather", "refusal", "running_session_refusal", "session_refusal", "start", "start_refusal"]


def gather(
    *,
    allowed: bool,
    subject: Any,
    links: list[tuple[bool, Any]],
    known: tuple[Any, ...] = (),
    may_act: bool = True,
    session: ImpersonationSession | None = None,
) -> ImpersonationFacts:
    """Every fact the rule reads, in the order it reads them: a session that is over (known from
    its row) ends the reading; with the switch off, nothing about the users is looked at, nothing
    about them can be told."""
    closed = impersonation_sessions.closed(session) if session is not None else None
    if closed is not None or not allowed:
        return ImpersonationFacts(
            allowed=allowed, subject=Party(id=str(subject.pk)), chain=(), session_closed=closed
        )
    party, chain = impersonation.chain(links, subject=subject, known=known)
    return ImpersonationFacts(
        allowed=True,
        subject=party,
        chain=chain,
        may_act=may_act,
        session_standing=impersonation_sessions.standing(session) if session is not None else None,
    )


def refusal(
    *,
    allowed: bool,
    subject: Any,
    act: dict[str, Any] | None,
    issuer: str,
    known: tuple[Any, ...] = (),
    may_act: bool = True,
    session: ImpersonationSession | None = None,
) -> str | None:
    """Why tokens may not be issued or renewed for ``subject`` on behalf of the actors of
    ``act`` (the token's, or the one about to be issued), or ``None``. A refusal ends ``session``
    and revokes what was issued under it."""
    facts = gather(
        allowed=allowed,
        subject=subject,
        links=impersonation.act_links(act, issuer=issuer),
        known=known,
        may_act=may_act,
        session=session,
    )
    reason = impersonation_decision(facts)
    if session is not None:
        impersonation_sessions.end_refused(session, reason)
    return reason


def session_refusal(session_id: int, *, lock: bool = False) -> str | None:
    """The decision for a token issued under an admin-started session, which names it by id: its
    actor acting for its subject, and the session itself. A deleted session refuses. With
    ``lock``, the session's row is locked first for the caller's transaction
    (``impersonation_sessions.running``): for a request about to issue tokens under it."""
    session = impersonation_sessions.running(session_id, lock=lock)
    if session is None:
        return "impersonation_ended"
    return running_session_refusal(session)


def running_session_refusal(session: ImpersonationSession) -> str | None:
    """``session_refusal`` for a session already read (the authorization view's)."""
    facts = gather(
        allowed=SecuritySettings.load().allow_impersonation,
        subject=session.subject,
        links=[(True, session.actor_id)],
        known=(session.actor,),
        session=session,
    )
    reason = impersonation_decision(facts)
    impersonation_sessions.end_refused(session, reason)
    return reason


def start_refusal(*, actor: Any, subject: Any) -> str | None:
    """Why ``actor`` may not start impersonating ``subject`` from the admin now, or ``None``: a
    signed-in user, sessions kept at this server, then the token endpoint's rule."""
    if actor is None or not getattr(actor, "is_authenticated", False):
        return "not_authenticated"
    if not impersonation_sessions.server_side_sessions():
        return "no_server_side_session"
    facts = gather(
        allowed=SecuritySettings.load().allow_impersonation,
        subject=subject,
        links=[(True, actor.pk)],
        known=(actor,),
    )
    return impersonation_decision(facts)


def start(
    request: HttpRequest, *, subject: Any, application: Any, reason: str, seconds: int
) -> ImpersonationSession:
    """Start an admin impersonation (``impersonation_sessions.begin``) if the rule allows it;
    ``PermissionDenied`` otherwise."""
    if start_refusal(actor=request.user, subject=subject) is not None:
        raise PermissionDenied
    return impersonation_sessions.begin(
        request, subject=subject, application=application, reason=reason, seconds=seconds
    )
