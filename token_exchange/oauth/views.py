"""DOT's token, authorization and revocation views, extended for token exchange.

``token_exchange.urls`` mounts them under DOT's own URL names, so everything that reverses
``oauth2_provider:token`` keeps working.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import BadRequest, SuspiciousOperation
from django.db import DatabaseError, router
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.multipartparser import MultiPartParserError
from django.urls import NoReverseMatch, reverse
from django.utils.decorators import method_decorator
from django.utils.translation import gettext as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST
from oauth2_provider import views as oauth2_views
from oauth2_provider.compat import login_not_required
from oauth2_provider.exceptions import OAuthToolkitError
from oauth2_provider.models import DeviceCodeResponse, get_access_token_model, get_device_grant_model
from oauth2_provider.settings import oauth2_settings
from oauth2_provider.signals import app_authorized
from oauthlib.oauth2.rfc6749 import errors

from token_exchange.constants import DEVICE_CODE_GRANT_TYPE, FORM_CONTENT_TYPE
from token_exchange.db.lookups import unique_row
from token_exchange.impersonation import decision as impersonation_decision
from token_exchange.impersonation import sessions as impersonation_sessions
from token_exchange.issuance import audit
from token_exchange.parameters import storable

logger = logging.getLogger("token_exchange")

# Every form parameter of the token endpoint that is, or proves possession of, a credential.
SENSITIVE_POST_PARAMETERS = (
    "password",
    "client_secret",
    "client_assertion",
    "code",
    "code_verifier",
    "refresh_token",
    "subject_token",
    "actor_token",
    "device_code",
)


# DOT reads both HTML form encodings; token exchange itself takes the first only (grant.py).
FORMS = frozenset({FORM_CONTENT_TYPE, "multipart/form-data"})


def _invalid_request(description: str) -> HttpResponse:
    error = errors.InvalidRequestError(description=description)
    response = HttpResponse(error.json, status=error.status_code, content_type="application/json")
    response["Cache-Control"] = "no-store"
    return response


def form_body_refusal(request: HttpRequest) -> HttpResponse | None:
    """An ``invalid_request`` answer for a POST body that is not a readable form, or None.

    RFC 6749 §3.2, RFC 7009 §2.1 and RFC 7662 §2.1 take parameters as a form: a JSON, XML or
    text body is refused rather than ignored. (DOT also reads ``multipart/form-data``, so its
    own grants keep accepting it; the token exchange grant does not.) A body Django will not
    parse (larger than ``DATA_UPLOAD_MAX_MEMORY_SIZE``, too many fields, not UTF-8) gets the
    same JSON error instead of Django's HTML 400 page.
    """
    if request.method != "POST":
        return None
    media_type = (request.content_type or "").split(";")[0].strip().lower()
    if media_type not in FORMS and (request.META.get("CONTENT_LENGTH") or "0") not in ("", "0"):
        return _invalid_request(f"Send the parameters as {FORM_CONTENT_TYPE}.")
    try:
        request.POST  # noqa: B018 - parsing is what may fail
    except (BadRequest, SuspiciousOperation, MultiPartParserError):
        return _invalid_request("The request body could not be read.")
    return None


def _nothing_issued(exc: DatabaseError) -> tuple[str, int, dict[str, str]]:
    """503 ``temporarily_unavailable`` for a token request the database failed.

    The backend runs a token request in one transaction, now rolled back: nothing was issued
    and the client may retry. The exception's text is not logged: a failing INSERT's message
    can quote the row, and the row holds the token.
    """
    logger.error("Token request failed in the database (%s): nothing was issued", type(exc).__name__)
    error = errors.TemporarilyUnavailableError(
        description="The token could not be issued. Try again later.", status_code=503
    )
    return error.json, error.status_code, {"Retry-After": "1", "Cache-Control": "no-store"}


class FormEndpoint:
    """Refuses bodies that are not forms before DOT reads them (``form_body_refusal``)."""

    @method_decorator(csrf_exempt)
    @method_decorator(login_not_required)
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refusal = form_body_refusal(request)
        if refusal is not None:
            return refusal
        return super().dispatch(request, *args, **kwargs)  # type: ignore[misc,no-any-return]


# On dispatch, so that every grant's path is covered, the device flow's and a 5xx's included.
@method_decorator(sensitive_post_parameters(*SENSITIVE_POST_PARAMETERS), name="dispatch")
class TokenView(FormEndpoint, oauth2_views.TokenView):  # type: ignore[misc]
    """DOT's token endpoint; hides token parameters from error reports, knows N_A responses."""

    # The headers of oauthlib's answer to this request (a view instance serves one request).
    oauthlib_headers: dict[str, str]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.POST.get("grant_type") == DEVICE_CODE_GRANT_TYPE:
            # DOT reads device_code with [] (a 500 when it is missing) and looks it up as is.
            device_code = request.POST.get("device_code")
            if not device_code or not storable(device_code):
                return _invalid_request("Missing or malformed device_code parameter.")
        return super().post(request, *args, **kwargs)  # type: ignore[no-any-return]

    def create_token_response(self, request: HttpRequest) -> tuple[Any, dict[str, str], str, int]:
        url, headers, body, status = super().create_token_response(request)
        self.oauthlib_headers = dict(headers)
        return url, headers, body, status

    def device_flow_token_response(self, request: HttpRequest, device_code: str) -> HttpResponse:
        self.oauthlib_headers = {}
        try:
            # DOT 3.4.1's view looks the code up before oauthlib: one it does not know is a 404
            # {"error": "device_not_found"} (RFC 6749 §5.2: 400 invalid_grant), and one nobody
            # approved stays authorization_pending past its lifetime (RFC 8628 §3.5:
            # expired_token). Checked against DOT 3.4.1; once DOT's view answers both so, this
            # lookup goes and the view is DOT's again.
            model = get_device_grant_model()
            grant = unique_row(
                model._default_manager.using(router.db_for_write(model)).filter(device_code=device_code)
            )
            if grant is None:
                error = errors.InvalidGrantError()
                refused = HttpResponse(error.json, status=error.status_code, content_type="application/json")
                refused["Cache-Control"] = "no-store"
                return refused
            grant.is_expired()  # records a code past its lifetime as expired, which DOT's view reads
            response: HttpResponse = super().device_flow_token_response(request, device_code)
        except DatabaseError as exc:
            body, status, headers = _nothing_issued(exc)
            response = HttpResponse(body, status=status, content_type="application/json")
            for key, value in headers.items():
                response[key] = value
            return response
        if response.status_code != 200:
            # DOT 3.4.1 answers oauthlib's errors without oauthlib's headers: a 503 would lose
            # its Retry-After (a replay store that did not answer about a client assertion).
            for key, value in self.oauthlib_headers.items():
                response.setdefault(key, value)
        response["Cache-Control"] = "no-store"
        return response

    def authorization_flow_token_response(
        self, request: HttpRequest, *args: Any, **kwargs: Any
    ) -> HttpResponse:
        try:
            _url, headers, body, status = self.create_token_response(request)
        except DatabaseError as exc:
            body, status, headers = _nothing_issued(exc)
        if status == 200:
            access_token = json.loads(body).get("access_token")
            # An exchange may answer with an ID token in access_token (token_type N_A): there
            # is no access token row, and no application was authorized to access anything.
            # Read back only for receivers of DOT's signal: a query no one would use otherwise.
            token = (
                get_access_token_model()
                .objects.filter(token_checksum=hashlib.sha256(access_token.encode("utf-8")).hexdigest())
                .first()
                if access_token and app_authorized.has_listeners(sender=self)
                else None
            )
            if token is not None:
                app_authorized.send(sender=self, request=request, token=token)
        response = HttpResponse(content=body, status=status)
        # Errors raised while saving a token reach DOT's backend without oauthlib's default
        # headers; every token endpoint response is JSON and must not be cached (RFC 6749 §5).
        response["Content-Type"] = "application/json"
        response["Cache-Control"] = "no-store"
        for key, value in headers.items():
            response[key] = value
        return response


class AuthorizationView(oauth2_views.AuthorizationView):  # type: ignore[misc]
    """DOT's authorization endpoint; while an admin-started impersonation runs in this browser
    session for the requesting client, the code it issues is the customer's, carrying ``act``.

    Only the authorization code flow: an implicit or hybrid response would hand tokens to the
    browser in a URL, which an impersonation never does. The code carries only the requested
    scopes the client policy lets an admin-started impersonation obtain
    (``ClientPolicy.admin_impersonation_scope``); when none is left, ``access_denied``: a code
    the client did not ask for is no answer.
    """

    def create_authorization_response(
        self, request: HttpRequest, scopes: str, credentials: dict[str, Any], allow: bool
    ) -> Any:
        session = impersonation_sessions.current(request) if allow else None
        if session is not None and session.application.client_id == credentials.get("client_id"):
            reason = impersonation_decision.running_session_refusal(session)
            if reason is None and credentials.get("response_type") != "code":
                reason = "impersonation_needs_code_flow"
            if reason is None:
                scopes = impersonation_sessions.allowed_scope(session, scopes)
                if not scopes:
                    reason = "scope_not_allowed_for_impersonation"
            if reason is not None:
                self._refuse(request, session, reason)
                raise OAuthToolkitError(
                    error=errors.AccessDeniedError(state=credentials.get("state")),
                    redirect_uri=credentials.get("redirect_uri"),
                )
            credentials = {**credentials, "token_exchange_impersonation": session}
        return super().create_authorization_response(request, scopes, credentials, allow)

    def _refuse(self, request: HttpRequest, session: Any, reason: str) -> None:
        context = audit.AuditContext(
            application=session.application,
            client_ip=audit.client_ip(request.META),
            grant_type="authorization_code",
            subject=session.subject,
            actor=session.actor,
            issuer=oauth2_settings.oidc_issuer(request),
            impersonation=session,
        )
        audit.refused(context, reason=reason, error="access_denied")


@require_POST
@login_required
def stop_impersonation(request: HttpRequest) -> HttpResponse:
    """The banner's Stop: end this browser session's impersonation, revoke its tokens, and go
    back to the customer's admin page, where it started.

    POST only, with Django's CSRF check; it never changes who is logged in here.
    """
    session = impersonation_sessions.stop(request)
    target = "/"  # also when the user model has no admin
    if session is not None:
        messages.success(
            request,
            _("You stopped acting as %(subject)s in %(application)s; its sign-in as them is revoked.")
            % {"subject": session.subject, "application": session.application.name},
            fail_silently=True,
        )
        subject = session.subject
        with contextlib.suppress(NoReverseMatch):
            target = reverse(
                f"admin:{subject._meta.app_label}_{subject._meta.model_name}_change", args=[subject.pk]
            )
    return HttpResponseRedirect(target)


class DeviceAuthorizationView(FormEndpoint, oauth2_views.DeviceAuthorizationView):  # type: ignore[misc]
    """DOT's RFC 8628 device authorization endpoint, answering the fields RFC 8628 §3.2 defines.

    oauthlib 4 adds ``scope`` to the device authorization response; DOT 3.4.1 builds its
    ``DeviceCodeResponse`` from every field of it, which takes no ``scope``: a 500 for every
    valid request. The response keeps the fields ``DeviceCodeResponse`` declares (RFC 8628 §3.2
    defines no ``scope`` there; the device grant stores the requested scope itself). Checked
    against DOT 3.4.1 and oauthlib 3.3 and 4.0; once DOT reads only the fields it knows, this
    view is DOT's again.
    """

    def create_device_authorization_response(self, request: HttpRequest) -> tuple[Any, Any, int]:
        headers, response, status = super().create_device_authorization_response(request)
        if status == 200 and isinstance(response, dict):
            known = {field.name for field in dataclasses.fields(DeviceCodeResponse)}
            response = {key: value for key, value in response.items() if key in known}
        return headers, response, status

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response: HttpResponse = super().post(request, *args, **kwargs)
        # RFC 8628 §3.2 and RFC 6749 §5.1: the answer carries a device_code, or an error (a 503
        # when the replay store cannot check a client assertion); neither is to be cached.
        response["Cache-Control"] = "no-store"
        return response


@method_decorator(sensitive_post_parameters(*SENSITIVE_POST_PARAMETERS, "token"), name="dispatch")
class RevokeTokenView(FormEndpoint, oauth2_views.RevokeTokenView):  # type: ignore[misc]
    """DOT's RFC 7009 revocation, with the token and client credentials hidden from error reports."""
