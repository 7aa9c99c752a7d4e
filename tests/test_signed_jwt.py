"""The pure rules for client-signed JWTs, as truth tables; ClientKey and createclientkey."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from io import StringIO
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.test import Client
from hypothesis import event, given
from hypothesis import strategies as st

from token_exchange.client_keys import InvalidKey, choose_key, generate_key_pair, parse_public_key
from token_exchange.jwt.signed_jwt import audience_matches, claims_refusal, header_refusal
from token_exchange.models import ClientKey

from .client_jwt import assertion_claims
from .conftest import make_app

NOW = 1_800_000_000
OURS = {"https://idp.example/o", "https://idp.example/o/token/"}


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"alg": "RS256"}, None),
        ({"alg": "ES512", "kid": "k", "typ": "JWT"}, None),
        ({"alg": "PS256", "typ": "application/JWT"}, None),
        ({"alg": "none"}, "unsupported_alg"),
        ({"alg": "None"}, "unsupported_alg"),
        ({"alg": "HS256"}, "unsupported_alg"),
        ({"alg": "rs256"}, "unsupported_alg"),
        ({"alg": ["RS256"]}, "unsupported_alg"),
        ({}, "unsupported_alg"),
        ({"alg": "RS256", "jku": "https://x"}, "key_in_header"),
        ({"alg": "RS256", "jwk": {}}, "key_in_header"),
        ({"alg": "RS256", "x5u": "https://x"}, "key_in_header"),
        ({"alg": "RS256", "x5c": []}, "key_in_header"),
        ({"alg": "RS256", "crit": []}, "crit_header"),
        ({"alg": "RS256", "typ": "at+jwt"}, "wrong_typ"),
        ({"alg": "RS256", "typ": "client-authentication+jwt"}, "wrong_typ"),
        ({"alg": "RS256", "typ": None}, "wrong_typ"),
        ({"alg": "RS256", "typ": 1}, "wrong_typ"),
        ({"alg": "RS256", "kid": "k"}, None),
        ({"alg": "RS256", "kid": None}, "malformed_kid"),
        ({"alg": "RS256", "kid": ""}, "malformed_kid"),
        ({"alg": "RS256", "kid": 7}, "malformed_kid"),
        ({"alg": "RS256", "kid": ["k"]}, "malformed_kid"),
    ],
)
def test_header_refusal(header, reason):
    assert header_refusal(header, allowed_typ={"jwt"}) == reason


@pytest.mark.parametrize(
    ("aud", "matches"),
    [
        ("https://idp.example/o", True),
        (["https://idp.example/o/token/"], True),
        (["https://idp.example/o", "https://idp.example/o/token/"], True),
        (["https://idp.example/o", "https://other.example/"], False),
        ("https://idp.example/o/", False),
        ("https://idp.example", False),
        ([], False),
        ("", False),
        (None, False),
        ([None], False),
        ({"https://idp.example/o": True}, False),
    ],
)
def test_audience_matches(aud, matches):
    assert audience_matches(aud, OURS) is matches


def claims(**overrides: Any) -> dict[str, Any]:
    values = {
        "iss": "c",
        "sub": "c",
        "aud": "https://idp.example/o",
        "iat": NOW,
        "exp": NOW + 300,
        "jti": "j",
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, None),
        ({"iss": "d"}, "wrong_issuer"),
        ({"iss": None}, "wrong_issuer"),
        ({"aud": "https://idp.example/"}, "wrong_audience"),
        ({"exp": None}, "missing_exp_or_iat"),
        ({"iat": None}, "missing_exp_or_iat"),
        ({"exp": "1900000000"}, "missing_exp_or_iat"),
        ({"exp": True}, "missing_exp_or_iat"),
        ({"exp": float("inf")}, "missing_exp_or_iat"),
        ({"exp": NOW + 299.5}, None),
        ({"iat": NOW - 300, "exp": NOW - 10}, None),  # expired, within the leeway
        ({"iat": NOW - 300, "exp": NOW - 60}, "expired"),
        ({"iat": NOW + 60, "exp": NOW + 120}, None),  # issued ahead, within the leeway
        ({"iat": NOW + 61, "exp": NOW + 120}, "issued_in_the_future"),
        ({"nbf": NOW + 60}, None),
        ({"nbf": NOW + 61}, "not_yet_valid"),
        ({"nbf": "later"}, "not_yet_valid"),
        ({"exp": NOW + 3600}, None),
        ({"exp": NOW + 3601}, "lifetime_too_long"),
        ({"iat": NOW - 4000, "exp": NOW + 10}, "lifetime_too_long"),
        ({"exp": NOW, "iat": NOW}, "lifetime_too_long"),
        ({"jti": None}, "missing_jti"),
        ({"jti": ""}, "missing_jti"),
        ({"jti": 5}, "missing_jti"),
        ({"jti": "j" * 255}, None),
        ({"jti": "j" * 256}, "missing_jti"),
        ({"jti": "\ud800"}, "missing_jti"),
        ({"jti": "a\x00b"}, None),
    ],
)
def test_claims_refusal(overrides, reason):
    assert claims_refusal(claims(**overrides), client_id="c", audiences=OURS, now=NOW, leeway=60) == reason


json_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = json_values | st.lists(json_values, max_size=2)


def mostly(good: Any) -> Any:
    """Nine times in ten a well-formed value, so that every rule is reached; else any JSON."""
    return st.integers(0, 9).flatmap(lambda n: good if n else json_values)


claim_values = {
    "iss": mostly(st.just("c")),
    "aud": mostly(st.sampled_from(sorted(OURS)) | st.lists(st.sampled_from([*sorted(OURS), "x"]))),
    "iat": mostly(st.integers(NOW - 4000, NOW + 100)),
    "exp": mostly(st.integers(NOW - 100, NOW + 4000) | st.floats(NOW - 100, NOW + 4000)),
    "jti": mostly(st.text(max_size=300)),
}


@given(st.fixed_dictionaries(claim_values, optional={"nbf": claim_values["iat"], "sub": json_values}))
def test_claims_refusal_never_raises_and_refuses_what_is_incomplete(value):
    reason = claims_refusal(value, client_id="c", audiences=OURS, now=NOW, leeway=60)
    assert reason is None or isinstance(reason, str)
    event(reason or "accepted")
    if reason is None:
        assert value["iss"] == "c"
        assert audience_matches(value["aud"], OURS)
        assert NOW - 60 < value["exp"] <= value["iat"] + 3600
        assert value["iat"] <= NOW + 60
        assert isinstance(value["jti"], str)
        assert 0 < len(value["jti"]) <= 255


KEY_A, KEY_B = SimpleNamespace(kid="a"), SimpleNamespace(kid="b")


@pytest.mark.parametrize(
    ("keys", "kid", "chosen"),
    [
        ([KEY_A], None, KEY_A),
        ([KEY_A], "a", KEY_A),
        ([KEY_A], "b", "unknown_kid"),
        ([KEY_A, KEY_B], "b", KEY_B),
        ([KEY_A, KEY_B], None, "kid_required"),
        ([], None, "no_usable_key"),
        ([], "a", "unknown_kid"),
        ([KEY_A], "", "malformed_kid"),
        ([KEY_A], 1, "malformed_kid"),
        ([KEY_A], ["a"], "malformed_kid"),
        ([KEY_A], "A", "unknown_kid"),
    ],
)
def test_choose_key(keys, kid, chosen):
    assert choose_key(keys, kid=kid) == chosen


# Keys ---------------------------------------------------------------------------------------


def _pem(public_key: Any) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.mark.parametrize("algorithm", ["RS256", "PS512", "ES256", "ES384", "ES512"])
def test_generated_key_pairs_sign_what_the_stored_key_verifies(algorithm):
    pair = generate_key_pair(algorithm)
    token = jwt.encode({"x": 1}, pair.private_pem, algorithm=algorithm)
    public = parse_public_key(pair.public_pem, algorithm)
    assert jwt.decode(token, public.export_to_pem(), algorithms=[algorithm]) == {"x": 1}


@pytest.mark.parametrize(
    ("pem", "algorithm", "message"),
    [
        (lambda: generate_key_pair("RS256").private_pem, "RS256", "This is a private key"),
        (lambda: "not a key", "RS256", "Not a PEM-encoded public key"),
        (lambda: generate_key_pair("ES256").public_pem, "RS256", "RS256 needs an RSA key."),
        (lambda: generate_key_pair("RS256").public_pem, "ES256", "ES256 needs an EC key on curve secp256r1."),
        (lambda: generate_key_pair("ES384").public_pem, "ES256", "ES256 needs an EC key on curve secp256r1."),
        (
            lambda: _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()),
            "RS256",
            "RSA keys must have at least 2048 bits.",
        ),
        (
            lambda: _pem(ec.generate_private_key(ec.SECP256K1()).public_key()),
            "ES256",
            "ES256 needs an EC key",
        ),
        (lambda: generate_key_pair("RS256").public_pem, "HS256", "'HS256' is not an allowed algorithm."),
        (lambda: generate_key_pair("RS256").public_pem, "none", "'none' is not an allowed algorithm."),
    ],
    ids=[
        "private",
        "garbage",
        "ec-for-rs",
        "rsa-for-es",
        "p384-for-es256",
        "rsa-1024",
        "secp256k1",
        "hs256",
        "none",
    ],
)
def test_keys_that_cannot_be_registered(pem, algorithm, message):
    with pytest.raises(InvalidKey, match=message):
        parse_public_key(pem(), algorithm)


@pytest.mark.django_db
def test_client_key_validation_explains_the_key(portal):
    key = ClientKey(application=portal, kid="k", public_key=generate_key_pair("RS256").private_pem)
    with pytest.raises(ValidationError) as raised:
        key.full_clean()
    assert "private key" in str(raised.value.message_dict["public_key"])
    with pytest.raises(ValidationError):
        ClientKey(application=portal, kid="k", public_key="x", algorithm="HS256").full_clean()


# createclientkey ----------------------------------------------------------------------------


@pytest.mark.django_db
def test_createclientkey_prints_a_key_file_that_authenticates_the_client(portal):
    out = StringIO()
    call_command("createclientkey", "portal", "--algorithm", "ES256", stdout=out)
    key_file = json.loads(out.getvalue())
    assert set(key_file) == {"type", "keyId", "key", "algorithm", "clientId"}
    assert key_file["clientId"] == "portal"
    stored = ClientKey.objects.get(application=portal)
    assert (stored.kid, stored.algorithm, stored.active, stored.expires_at) == (
        key_file["keyId"],
        "ES256",
        True,
        None,
    )
    assert "PRIVATE" not in stored.public_key
    assert key_file["key"] not in str(ClientKey.objects.values_list())
    token = jwt.encode(
        assertion_claims("portal"), key_file["key"], "ES256", headers={"kid": key_file["keyId"]}
    )

    response = Client().post(
        "/o/token/",
        {
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": token,
        },
    )
    # The portal's grant type is authorization_code: authenticated, then refused for the grant.
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "unauthorized_client"


@pytest.mark.django_db
def test_createclientkey_writes_a_private_file_once(portal, tmp_path):
    path = tmp_path / "portal.json"
    call_command(
        "createclientkey",
        "portal",
        "--output",
        str(path),
        "--kid",
        "2026-11",
        "--expires-in-days",
        "90",
        stderr=StringIO(),
    )
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["keyId"] == "2026-11"
    assert ClientKey.objects.get(kid="2026-11").expires_at is not None
    with pytest.raises(CommandError, match="already has a key"):
        call_command("createclientkey", "portal", "--kid", "2026-11", stdout=StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("createclientkey", "portal", "--output", str(path), stderr=StringIO())
    assert ClientKey.objects.count() == 1  # the refused write stored no key


@pytest.mark.django_db
def test_createclientkey_on_an_existing_file_says_what_to_do(portal, tmp_path):
    """The file may hold another key's private key, which nobody can give back: kept, and told why."""
    path = tmp_path / "portal.json"
    path.write_text("the only copy of another key\n")
    with pytest.raises(CommandError) as refused:
        call_command("createclientkey", "portal", "--output", str(path), stderr=StringIO())
    assert str(refused.value) == (
        f"{path} already exists. It may hold another key's private key, which the server does not "
        "keep and cannot give back. Choose another --output path, or add --force to replace the file."
    )
    assert path.read_text() == "the only copy of another key\n"
    assert not ClientKey.objects.exists()

    with pytest.raises(CommandError, match="is a directory: name the key file"):
        call_command("createclientkey", "portal", "--output", str(tmp_path), stderr=StringIO())
    with pytest.raises(CommandError, match=r"the directory .*missing does not exist"):
        call_command("createclientkey", "portal", "--output", str(tmp_path / "missing" / "k.json"))
    with pytest.raises(CommandError, match="--force replaces the file named by --output"):
        call_command("createclientkey", "portal", "--force", stdout=StringIO())
    assert not ClientKey.objects.exists()


@pytest.mark.django_db
def test_createclientkey_force_replaces_the_file_owner_readable_only(portal, tmp_path):
    path = tmp_path / "portal.json"
    path.write_text("an old key\n")
    path.chmod(0o644)
    call_command("createclientkey", "portal", "--output", str(path), "--force", stderr=StringIO())
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert json.loads(path.read_text())["keyId"] == ClientKey.objects.get(application=portal).kid
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portal.json"]  # no temporary file left

    # A symlink is replaced, not written through: the file it pointed at keeps its content.
    target = tmp_path / "elsewhere.txt"
    target.write_text("not a key file\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(CommandError, match="already exists"):
        call_command("createclientkey", "portal", "--output", str(link), stderr=StringIO())
    call_command("createclientkey", "portal", "--output", str(link), "--force", stderr=StringIO())
    assert target.read_text() == "not a key file\n"
    assert not link.is_symlink()
    assert json.loads(link.read_text())["clientId"] == "portal"


@pytest.mark.django_db
def test_createclientkey_refuses_public_and_unknown_clients(db):
    make_app("spa", exchange=None, client_type="public")
    with pytest.raises(CommandError, match="Only confidential clients"):
        call_command("createclientkey", "spa", stdout=StringIO())
    with pytest.raises(CommandError, match="No application"):
        call_command("createclientkey", "nobody", stdout=StringIO())
    make_app("service", exchange=None)
    with pytest.raises(CommandError, match="positive"):
        call_command("createclientkey", "service", "--expires-in-days", "0", stdout=StringIO())


@contextlib.contextmanager
def limited_file_size() -> Iterator[None]:
    """Files this process writes stop at 200 bytes (RLIMIT_FSIZE), as on a full disk: a key file
    fails with EFBIG after part of it is on disk."""
    resource = pytest.importorskip("resource")
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


@pytest.mark.django_db
@pytest.mark.parametrize("force", [False, True], ids=["new file", "--force"])
def test_createclientkey_a_key_file_written_in_part_is_removed(portal, tmp_path, force):
    """A truncated private key is no key: it is removed, the old file (--force) is kept, no key is
    stored, and the next run is not refused because of what the failed one left."""
    path = tmp_path / "portal.json"
    if force:
        path.write_text("an old key\n")
    arguments = ["portal", "--output", str(path), *(["--force"] if force else [])]
    with pytest.raises(CommandError) as refused, limited_file_size():
        call_command("createclientkey", *arguments, stderr=StringIO())
    assert str(refused.value) == f"Cannot create {path}: File too large."
    assert not ClientKey.objects.exists()
    if force:
        assert path.read_text() == "an old key\n"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["portal.json"]  # no temporary file
    else:
        assert not path.exists()

    call_command("createclientkey", *arguments, stderr=StringIO())
    assert json.loads(path.read_text())["keyId"] == ClientKey.objects.get(application=portal).kid


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("force", [False, True], ids=["new file", "--force"])
def test_createclientkey_a_key_that_is_not_committed_leaves_the_files_as_they_were(
    portal, tmp_path, monkeypatch, force
):
    """The file is written before the key's transaction commits and, with --force, renamed over
    the old one only after: a commit that fails leaves no key file for a key that is not stored,
    and the old file (which may hold the only copy of another key) in place."""
    from django.db import DatabaseError, connections, router

    path = tmp_path / "portal.json"
    if force:
        path.write_text("an old key\n")

    def commit_fails() -> None:
        raise DatabaseError("could not commit")

    arguments = ["portal", "--output", str(path), *(["--force"] if force else [])]
    with monkeypatch.context() as patch:
        # The connection the key is written through (not "default" when a router moves it).
        patch.setattr(connections[router.db_for_write(ClientKey)], "commit", commit_fails)
        with pytest.raises(DatabaseError, match="could not commit"):
            call_command("createclientkey", *arguments, stderr=StringIO())
    assert not ClientKey.objects.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == (["portal.json"] if force else [])
    if force:
        assert path.read_text() == "an old key\n"

    call_command("createclientkey", *arguments, stderr=StringIO())
    assert json.loads(path.read_text())["keyId"] == ClientKey.objects.get(application=portal).kid


@pytest.mark.django_db
def test_createclientkey_force_that_cannot_rename_stores_no_key(portal, tmp_path, monkeypatch):
    """The rename comes after the commit; when it fails, the stored key whose private half no
    file holds is taken back, and the temporary file removed."""
    path = tmp_path / "portal.json"
    path.write_text("an old key\n")

    def rename_fails(source: str, destination: str) -> None:
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", rename_fails)
        with pytest.raises(CommandError) as refused:
            call_command("createclientkey", "portal", "--output", str(path), "--force", stderr=StringIO())
    assert str(refused.value) == f"Cannot create {path}: Permission denied."
    assert not ClientKey.objects.exists()
    assert path.read_text() == "an old key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["portal.json"]


@pytest.mark.parametrize("algorithm", ["RS256", "ES256", "HS256"])
def test_our_signatures_are_byte_for_byte_what_jwcryptos_jws_writes(algorithm):
    """``jose.sign`` runs jwcrypto's signing step without ``JWS``'s header checks (issue 19): for
    our fixed header the result must be exactly ``JWS``'s, and verify with another library."""
    from jwcrypto import jwk, jws

    from token_exchange.jwt import jose

    if algorithm == "HS256":
        from jwcrypto.common import base64url_decode

        key = jwk.JWK.generate(kty="oct", size=256)
        verifying: Any = base64url_decode(json.loads(key.export())["k"])
    elif algorithm == "ES256":
        key = jwk.JWK.generate(kty="EC", crv="P-256")
        verifying = key.get_op_key("verify")
    else:
        key = jwk.JWK.generate(kty="RSA", size=2048)
        verifying = key.get_op_key("verify")
    claims = {"iss": "https://idp.example.com", "sub": "7", "act": {"sub": "3"}, "aud": ["a", "b"], "n": 1.5}
    ours = jose.sign(claims, key, algorithm, typ="at+jwt", kid="k1")
    theirs = jws.JWS(json.dumps(claims, separators=(",", ":")).encode())
    header = {"alg": algorithm, "typ": "at+jwt", "kid": "k1"}
    theirs.add_signature(key, alg=algorithm, protected=json.dumps(header, separators=(",", ":")))
    expected = theirs.serialize(compact=True)
    if algorithm == "ES256":  # ECDSA signatures are randomized: the header and payload must agree
        assert ours.rsplit(".", 1)[0] == expected.rsplit(".", 1)[0]
    else:
        assert ours == expected
    # PyJWT 2.8 (the extra's floor) has decode_complete on PyJWT only.
    decoded = jwt.PyJWT().decode_complete(
        ours, verifying, algorithms=[algorithm], options={"verify_aud": False}
    )
    assert decoded["header"] == {"alg": algorithm, "typ": "at+jwt", "kid": "k1"}
    assert decoded["payload"] == claims
    assert jose.verify(ours, key, algorithm)[1] == claims
