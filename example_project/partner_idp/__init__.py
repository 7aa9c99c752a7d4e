"""A partner's OpenID provider this project did not write: panva's ``oidc-provider`` (npm,
pinned in package.json, installed by ``make install``), started by ``idp.mjs`` in a Node.js
process of its own on a loopback port.

The example project trusts it (``seed_demo``: "Partner IdP", ``http://127.0.0.1:8002``), and
``make partner-idp`` runs it there; ``python -m example_project.partner_idp login alice`` signs a
user in at it and prints the tokens for the walkthrough (``__main__.py``). The tests start one
on a free port, obtain real ID tokens and real RFC 9068 JWT access tokens from it, as a partner's
application would, and present them to our token endpoint (``tests/external_idp``: this module
and a pytest fixture)::

    idp = ExternalIdP.start(keys=[new_rsa_jwk("partner-1")])  # or ExternalIdP.attach(issuer)
    id_token = idp.id_token(sub="alice", email="alice@example.com", email_verified=True)
    idp.stop()

Users sign in without a browser: the authorization request's ``login_hint`` carries the account
(base64url JSON), the provider's interaction signs it in and consents to everything requested,
and this module follows the redirects by hand (with the cookies they set) up to the client's
redirect URI, whose code it redeems with PKCE.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests
from jwcrypto import jwk

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "idp.mjs"
NODE_MODULES = HERE / "node_modules" / "oidc-provider"
START_TIMEOUT = 20  # seconds until the provider prints READY
TIMEOUT = 10  # seconds, for every HTTP request to the provider

# Claims put in the ID token with the openid scope (EXTRA_CLAIMS of idp.mjs), beside email and
# email_verified (email scope) and the profile claims (profile scope).
DEFAULT_EXTRA_CLAIMS = ("tid", "hd", "groups", "roles", "oid")
PROFILE_CLAIMS = (
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "picture",
    "locale",
    "updated_at",
)
REDIRECT_URI = "http://127.0.0.1/callback"

# Where `make partner-idp` serves (PARTNER_PORT), which seed_demo trusts and `login` signs in at;
# PARTNER_ORIGIN names another issuer for the last two.
DEFAULT_PORT = 8002


def default_issuer() -> str:
    """The partner's issuer in the example project: PARTNER_ORIGIN, else port 8002 on loopback."""
    return os.environ.get("PARTNER_ORIGIN", f"http://127.0.0.1:{DEFAULT_PORT}").strip().rstrip("/")


@dataclass(frozen=True)
class Client:
    """A client registered at the provider (client_secret_basic)."""

    client_id: str
    client_secret: str
    redirect_uri: str = REDIRECT_URI

    def metadata(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types": ["code"],
            "redirect_uris": [self.redirect_uri],
        }


PARTNER_APP = Client("partner-app", "partner-app-secret")


def new_rsa_jwk(kid: str) -> dict[str, Any]:
    """A private 2048-bit RSA JWK (RS256 at the provider)."""
    key = jwk.JWK.generate(kty="RSA", size=2048, kid=kid)
    exported: dict[str, Any] = key.export_private(as_dict=True)
    return exported


def new_ec_jwk(kid: str) -> dict[str, Any]:
    """A private P-256 JWK (ES256 at the provider, when it is the first key)."""
    key = jwk.JWK.generate(kty="EC", crv="P-256", kid=kid)
    exported: dict[str, Any] = key.export_private(as_dict=True)
    return exported


def public_jwk(private: Mapping[str, Any]) -> dict[str, Any]:
    """The public half of a private JWK, as the provider publishes it."""
    exported: dict[str, Any] = jwk.JWK(**private).export_public(as_dict=True)
    return exported


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class ExternalIdPError(AssertionError):
    """The provider refused, or answered what a provider should not, or cannot run."""


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        raise ExternalIdPError(
            "node is not on PATH: the external OpenID provider needs Node.js 20+ (then `make install`)"
        )
    if not NODE_MODULES.is_dir():
        raise ExternalIdPError(
            f"{NODE_MODULES} is missing: run `make install` (npm ci in example_project/partner_idp)"
        )
    return node


class ExternalIdP:
    """One oidc-provider process; ``start`` it, ``stop`` it when done. Or one already running
    (``attach``): its tokens, no process."""

    def __init__(
        self,
        *,
        keys: Sequence[Mapping[str, Any]] = (),
        id_token_ttl: int = 600,
        access_token_ttl: int = 600,
        clients: Sequence[Client] = (PARTNER_APP,),
        extra_claims: Sequence[str] = DEFAULT_EXTRA_CLAIMS,
        port: int = 0,
    ) -> None:
        self.keys = [dict(key) for key in keys]
        self.id_token_ttl = id_token_ttl
        self.access_token_ttl = access_token_ttl
        self.clients = {client.client_id: client for client in clients}
        self.extra_claims = tuple(extra_claims)
        self.port = port
        self.issuer = ""
        self.metadata: dict[str, Any] = {}
        self.process: subprocess.Popen[bytes] | None = None
        # The keys, the clients and the log of a started provider; none for an attached one.
        self.directory: Path | None = None

    @property
    def log(self) -> Path | None:
        """The started provider's stdout and stderr."""
        return self.directory / "idp.log" if self.directory is not None else None

    @classmethod
    def start(
        cls,
        *,
        keys: Sequence[Mapping[str, Any]],
        id_token_ttl: int = 600,
        access_token_ttl: int = 600,
        clients: Sequence[Client] = (PARTNER_APP,),
        extra_claims: Sequence[str] = DEFAULT_EXTRA_CLAIMS,
        port: int = 0,
    ) -> ExternalIdP:
        """A provider on loopback ``port`` (0: a free one), signing with ``keys[0]`` and
        publishing all of ``keys``, once it serves its discovery document."""
        if not keys:
            raise ValueError("the provider needs at least one key")
        idp = cls(
            keys=keys,
            id_token_ttl=id_token_ttl,
            access_token_ttl=access_token_ttl,
            clients=clients,
            extra_claims=extra_claims,
            port=port,
        )
        try:
            idp._launch()
        except BaseException:
            idp.stop()
            raise
        return idp

    @classmethod
    def attach(
        cls,
        issuer: str,
        *,
        clients: Sequence[Client] = (PARTNER_APP,),
        extra_claims: Sequence[str] = DEFAULT_EXTRA_CLAIMS,
    ) -> ExternalIdP:
        """The provider already serving ``issuer`` (``make partner-idp``), read from its
        discovery document: sign users in at it with the ``clients`` it was started with. Its
        private keys are not known here, and ``stop`` leaves it running."""
        idp = cls(clients=clients, extra_claims=extra_claims)
        idp.issuer = issuer.rstrip("/")
        idp._discover()
        idp.port = int(urlsplit(idp.issuer).port or 0)
        return idp

    def __repr__(self) -> str:
        return f"<ExternalIdP {self.issuer or 'not started'}>"

    # -- the process -------------------------------------------------------------------------

    def _launch(self) -> None:
        node = _node()
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="external-idp-"))
        assert self.log is not None
        jwks_file = self.directory / "jwks.json"
        jwks_file.touch(mode=0o600)
        jwks_file.write_text(json.dumps({"keys": self.keys}))
        clients_file = self.directory / "clients.json"
        clients_file.write_text(json.dumps([client.metadata() for client in self.clients.values()]))
        env = {
            **os.environ,
            "PORT": str(self.port),
            "JWKS_FILE": str(jwks_file),
            "CLIENTS_FILE": str(clients_file),
            "ID_TOKEN_TTL": str(self.id_token_ttl),
            "ACCESS_TOKEN_TTL": str(self.access_token_ttl),
            "EXTRA_CLAIMS": ",".join(self.extra_claims),
        }
        env.pop("DEBUG", None)  # oidc-provider's debug logging, if a shell set it for something else
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [node, str(SCRIPT)],
                cwd=HERE,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.issuer = self._wait_until_ready(offset)
        self.port = int(urlsplit(self.issuer).port or 0)
        self._discover()

    def _discover(self) -> None:
        url = f"{self.issuer}/.well-known/openid-configuration"
        try:
            response = requests.get(url, timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise ExternalIdPError(
                f"no OpenID provider answers at {self.issuer} ({type(exc).__name__})"
            ) from exc
        self._check(response, "discovery")
        self.metadata = response.json()
        if self.metadata.get("issuer") != self.issuer:
            raise ExternalIdPError(
                f"{url} names the issuer {self.metadata.get('issuer')!r}, not {self.issuer!r}"
            )

    def _wait_until_ready(self, offset: int) -> str:
        """The issuer the process prints once listening (its log past ``offset``)."""
        assert self.process is not None
        assert self.log is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = self.log.read_bytes()[offset:].decode(errors="replace")
            for line in text.splitlines():
                if line.startswith("READY "):
                    return line.removeprefix("READY ").strip()
            if self.process.poll() is not None:
                raise ExternalIdPError(
                    f"the external OpenID provider exited with {self.process.returncode}:\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise ExternalIdPError(
                    f"the external OpenID provider was not ready within {START_TIMEOUT} s:\n{self.output()}"
                )
            time.sleep(0.02)

    def output(self, limit: int = 6000) -> str:
        """The tail of the provider's stdout and stderr (none when attached)."""
        if self.log is None:
            return ""
        try:
            return self.log.read_text(errors="replace")[-limit:]
        except OSError:
            return ""

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    def stop(self) -> None:
        """Stop the process and remove its files (keys included); an attached provider runs on."""
        self._terminate()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def rotate(self, keys: Sequence[Mapping[str, Any]]) -> None:
        """Restart on the same port (same issuer) signing with ``keys[0]`` and publishing all of
        ``keys``: e.g. ``[new, old]``. Sessions, grants and issued refresh tokens are forgotten."""
        if not keys:
            raise ValueError("the provider needs at least one key")
        if self.directory is None:
            raise ExternalIdPError(f"the provider at {self.issuer} was attached, not started here")
        self._terminate()
        self.keys = [dict(key) for key in keys]
        self._launch()

    # -- endpoints ---------------------------------------------------------------------------

    @property
    def jwks_uri(self) -> str:
        return str(self.metadata["jwks_uri"])

    @property
    def token_endpoint(self) -> str:
        return str(self.metadata["token_endpoint"])

    @property
    def authorization_endpoint(self) -> str:
        return str(self.metadata["authorization_endpoint"])

    def jwks(self) -> dict[str, Any]:
        """The public JWKS, fetched from the ``jwks_uri``."""
        response = requests.get(self.jwks_uri, timeout=TIMEOUT)
        self._check(response, "jwks")
        keys: dict[str, Any] = response.json()
        return keys

    def _check(self, response: requests.Response, what: str) -> None:
        if response.status_code != 200:
            raise ExternalIdPError(
                f"{what}: {response.request.method} {response.url} answered {response.status_code}: "
                f"{response.text[:2000]}\n--- provider output ---\n{self.output(3000)}"
            )

    def _client(self, client_id: str) -> Client:
        try:
            return self.clients[client_id]
        except KeyError:
            raise ValueError(f"no client {client_id!r} at this provider: {sorted(self.clients)}") from None

    # -- tokens ------------------------------------------------------------------------------

    def login(
        self,
        *,
        sub: str,
        scope: str = "openid email profile",
        resource: str | None = None,
        client_id: str = PARTNER_APP.client_id,
        email: str | None = None,
        email_verified: bool | None = None,
        access_token_claims: Mapping[str, Any] | None = None,
        nonce: str | None = None,
        **claims: Any,
    ) -> dict[str, Any]:
        """Sign ``sub`` in with the authorization code flow and PKCE, and redeem the code: the
        token response (``id_token``, ``access_token``, ``refresh_token``, ``scope``, ...).

        ``email``, ``email_verified`` and ``claims`` are the account's claims: they are in the ID
        token when their scope is requested (email; profile; the extra claims come with openid).
        With a ``resource``, the access token is an RFC 9068 JWT for it (scope's ``api``,
        ``read``, ``write`` are its scopes), carrying ``access_token_claims`` too; without one,
        an opaque token for userinfo.
        """
        client = self._client(client_id)
        known = {*self.extra_claims, *PROFILE_CLAIMS}
        if unknown := sorted(set(claims) - known):
            raise ValueError(
                f"claims {unknown} would not reach the ID token: start the provider with extra_claims"
            )
        account: dict[str, Any] = {"sub": sub, "email": email, "email_verified": email_verified, **claims}
        hint = {key: value for key, value in account.items() if value is not None}
        if access_token_claims:
            hint["access_token_claims"] = dict(access_token_claims)
        verifier = secrets.token_urlsafe(48)
        state = secrets.token_urlsafe(16)
        params = {
            "client_id": client.client_id,
            "response_type": "code",
            "redirect_uri": client.redirect_uri,
            "scope": scope,
            "state": state,
            "nonce": nonce or secrets.token_urlsafe(16),
            "code_challenge": _b64url(hashlib.sha256(verifier.encode("ascii")).digest()),
            "code_challenge_method": "S256",
            "login_hint": _b64url(json.dumps(hint).encode()),
        }
        if resource is not None:
            params["resource"] = resource
        with requests.Session() as browser:
            callback = self._follow(browser, self.authorization_endpoint, params, client.redirect_uri)
        query = parse_qs(urlsplit(callback).query)
        if "error" in query:
            raise ExternalIdPError(f"the authorization request was refused: {query}\n{self.output(3000)}")
        assert query.get("state") == [state], callback
        response = requests.post(
            self.token_endpoint,
            data={
                "grant_type": "authorization_code",
                "code": query["code"][0],
                "redirect_uri": client.redirect_uri,
                "code_verifier": verifier,
            },
            auth=(client.client_id, client.client_secret),
            timeout=TIMEOUT,
        )
        self._check(response, "authorization_code")
        tokens: dict[str, Any] = response.json()
        return tokens

    def _follow(
        self, browser: requests.Session, url: str, params: Mapping[str, str], redirect_uri: str
    ) -> str:
        """GET ``url``, then every Location it redirects to, until the client's redirect URI."""
        response = browser.get(url, params=params, allow_redirects=False, timeout=TIMEOUT)
        for _hop in range(10):
            if response.status_code not in {302, 303}:
                break
            location = urljoin(response.url, response.headers["Location"])
            if location.split("?", 1)[0] == redirect_uri:
                return location
            response = browser.get(location, allow_redirects=False, timeout=TIMEOUT)
        raise ExternalIdPError(
            f"the sign-in did not reach {redirect_uri}: {response.status_code} at {response.url}: "
            f"{response.text[:2000]}\n--- provider output ---\n{self.output(3000)}"
        )

    def id_token(
        self,
        *,
        sub: str,
        email: str | None = None,
        email_verified: bool | None = None,
        client_id: str = PARTNER_APP.client_id,
        scope: str = "openid email profile",
        nonce: str | None = None,
        **claims: Any,
    ) -> str:
        """A real ID token for ``sub`` issued to ``client_id`` (its ``aud``)."""
        tokens = self.login(
            sub=sub,
            scope=scope,
            client_id=client_id,
            email=email,
            email_verified=email_verified,
            nonce=nonce,
            **claims,
        )
        return str(tokens["id_token"])

    def client_credentials_token(
        self, *, resource: str, scope: str = "api", client_id: str = PARTNER_APP.client_id
    ) -> str:
        """An RFC 9068 JWT access token for ``resource`` with no user: its ``sub`` is the client's id."""
        client = self._client(client_id)
        response = requests.post(
            self.token_endpoint,
            data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
            auth=(client.client_id, client.client_secret),
            timeout=TIMEOUT,
        )
        self._check(response, "client_credentials")
        return str(response.json()["access_token"])

    def refresh(
        self, refresh_token: str, *, client_id: str = PARTNER_APP.client_id, resource: str | None = None
    ) -> dict[str, Any]:
        """The token response to a refresh_token grant."""
        client = self._client(client_id)
        data = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        if resource is not None:
            data["resource"] = resource
        response = requests.post(
            self.token_endpoint, data=data, auth=(client.client_id, client.client_secret), timeout=TIMEOUT
        )
        self._check(response, "refresh_token")
        tokens: dict[str, Any] = response.json()
        return tokens
