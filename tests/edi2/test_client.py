"""The message service client and HelseID: tokens with a signed client assertion, DPoP proofs
and nonces, renewal on refusal, and how the service's answers become our errors. Every request
is checked by the fake against the service's OpenAPI description."""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm

from pfhjem_msg.edi2 import dpop
from pfhjem_msg.edi2.answer import AppRecAnswer, receipt_of
from pfhjem_msg.edi2.client import Edi2Client, Edi2RequestRejected
from pfhjem_msg.edi2.dpop import load_signing_key
from pfhjem_msg.edi2.helseid import Edi2AuthError, Token
from pfhjem_msg.errors import ConfigError, TransientDeliveryError
from pfhjem_msg.kith import apprec
from pfhjem_msg.kith.batch import examine_file
from pfhjem_msg.kith.verdict import Options
from tests.conftest import SAMPLES
from tests.edi2.conftest import OUR_HER, SENDER_HER, ClientKey, client_for, make_fake, settings_for
from tests.edi2_fake import FakeService, jwk_thumbprint

DOC = b"<?xml version='1.0' encoding='UTF-8'?>\n<MsgHead/>\n"


def test_listing_and_fetching_pass_the_description(fake: FakeService, client_key: ClientKey) -> None:
    sid = fake.add_inbound(DOC, OUR_HER, SENDER_HER)
    client = client_for(fake, client_key)
    listed = client.unread()
    assert [(m.id, m.receiver_her, m.sender_her, m.is_apprec) for m in listed] == [
        (sid, OUR_HER, SENDER_HER, False)
    ]
    assert client.business_document(sid) == DOC
    assert fake.problems == []


def test_token_is_cached_across_calls(fake: FakeService, client_key: ClientKey) -> None:
    client = client_for(fake, client_key)
    for _ in range(3):
        client.unread()
    assert fake.token_requests == 1
    assert fake.problems == []


def test_token_is_renewed_shortly_before_it_expires(spec: dict[str, Any], client_key: ClientKey) -> None:
    service = make_fake(spec, client_key, token_seconds=3).start()
    try:
        client = client_for(service, client_key, renew_before_seconds=2)
        client.unread()
        client.unread()
        assert service.token_requests == 1
        time.sleep(1.2)
        client.unread()
        assert service.token_requests == 2
        assert service.problems == []
    finally:
        service.stop()


def test_token_endpoint_nonce_is_answered(fake: FakeService, client_key: ClientKey) -> None:
    fake.token_nonce = "token-nonce-1"
    client = client_for(fake, client_key)
    client.unread()
    assert fake.token_requests == 2  # refused for want of the nonce, then granted with it
    assert fake.problems == []


def test_api_nonce_is_answered_without_a_new_token(fake: FakeService, client_key: ClientKey) -> None:
    fake.api_nonce = "api-nonce-1"
    client = client_for(fake, client_key)
    client.unread()
    client.unread()  # the nonce is kept: no second 401
    assert fake.calls.count("GetMessages") == 3
    assert fake.token_requests == 1
    assert fake.problems == []


def test_proof_without_the_tokens_hash_is_refused(
    fake: FakeService, client_key: ClientKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fake's ``ath`` check has teeth: a client that hashes the token wrongly is refused."""
    monkeypatch.setattr(dpop, "access_token_hash", lambda token: dpop.b64url(b"not the hash"))
    with pytest.raises(Edi2AuthError):
        client_for(fake, client_key).unread()
    assert any("ath" in p for p in fake.problems)


def test_revoked_token_is_renewed_once(fake: FakeService, client_key: ClientKey) -> None:
    client = client_for(fake, client_key)
    client.unread()
    fake.revoke_tokens()
    assert client.unread() == []
    assert fake.token_requests == 2
    assert fake.problems == []


def test_second_refusal_after_renewal_is_an_auth_failure(fake: FakeService, client_key: ClientKey) -> None:
    fake.inject("GetMessages", 403, times=2)
    with pytest.raises(Edi2AuthError, match="after a renewal"):
        client_for(fake, client_key).unread()
    assert fake.token_requests == 2
    assert fake.calls.count("GetMessages") == 2


def test_token_refused_by_helseid_is_an_auth_failure(fake: FakeService, client_key: ClientKey) -> None:
    fake.refuse_tokens = True
    with pytest.raises(Edi2AuthError, match="invalid_client"):
        client_for(fake, client_key).unread()


def test_server_error_is_transient(fake: FakeService, client_key: ClientKey) -> None:
    fake.inject("GetMessages", 500)
    client = client_for(fake, client_key)
    with pytest.raises(TransientDeliveryError, match="500"):
        client.unread()
    assert client.unread() == []


def test_timeout_is_transient(fake: FakeService, client_key: ClientKey) -> None:
    fake.inject("GetMessages", None, stall=1.5)
    client = client_for(fake, client_key, timeout=0.3)
    with pytest.raises(TransientDeliveryError, match="in time"):
        client.unread()


def test_helseid_down_is_transient(fake: FakeService, client_key: ClientKey) -> None:
    fake.inject("token", 503)
    with pytest.raises(TransientDeliveryError, match="503"):
        client_for(fake, client_key).unread()


def test_bad_request_is_permanent_with_the_request_id(fake: FakeService, client_key: ClientKey) -> None:
    """A document that does not declare UTF-8 is refused; the error carries the service's
    requestId and no byte of the document."""
    secret = b"<?xml version='1.0' encoding='ISO-8859-1'?>\n<MsgHead>Kari Nordmann 01017012345</MsgHead>"
    with pytest.raises(Edi2RequestRejected) as caught:
        client_for(fake, client_key).send(secret)
    assert caught.value.status == 400 and caught.value.request_id
    assert caught.value.request_id in str(caught.value)
    assert "Kari" not in str(caught.value) and "01017012345" not in str(caught.value)


def test_unknown_message_is_permanent(fake: FakeService, client_key: ClientKey) -> None:
    with pytest.raises(Edi2RequestRejected) as caught:
        client_for(fake, client_key).business_document("3d924740-9f7b-4c33-93af-ff72e118d1e6")
    assert caught.value.status == 404


def test_listed_id_that_is_not_an_id_never_reaches_a_url(fake: FakeService, client_key: ClientKey) -> None:
    """Path injection through a hostile listing: the id is checked before it is used."""
    with pytest.raises(TransientDeliveryError, match="not a valid id"):
        client_for(fake, client_key).business_document("../../connect/token")
    assert "GetBusinessDocument" not in fake.calls


def test_sending_and_reading_the_receivers_apprec(fake: FakeService, client_key: ClientKey) -> None:
    client = client_for(fake, client_key)
    sent = client.send(DOC, receivers=(SENDER_HER,))
    assert fake.outbound[sent].document == DOC and fake.outbound[sent].receivers == [SENDER_HER]
    assert client.apprecs(sent) == []
    fake.answer_outbound(sent, SENDER_HER, "Rejected", [{"errorCode": "E35", "details": "x"}])
    (state,) = client.apprecs(sent)
    assert receipt_of(state.apprec_status, state.errors) == ("2", "E35")
    (status,) = client.status(sent)
    assert status.delivery_state == "Acknowledged" and status.apprec_status == "Rejected"
    assert fake.problems == []


def test_apprec_posted_in_the_services_schema(
    fake: FakeService, client_key: ClientKey, options: Options
) -> None:
    """The status and error list our own AppRec would carry, from the same decision."""
    decision = apprec.decide(examine_file(SAMPLES / "dlg11-marked-tema.xml", options),
                             apprec.AppRecPolicy(known_her_ids=frozenset({"9999999"})))  # fmt: skip
    answer = AppRecAnswer.of(decision)
    assert answer is not None and answer.status == "2"
    assert decision.xml is not None and AppRecAnswer.from_xml(decision.xml) == answer
    sid = fake.add_inbound(DOC, OUR_HER, SENDER_HER)
    client_for(fake, client_key).post_apprec(sid, OUR_HER, answer)
    ((_, her, body),) = fake.apprec_posts
    assert her == OUR_HER and body["appRecStatus"] == "Rejected"
    assert [e["errorCode"] for e in body["appRecErrorList"]] == [c for c, _ in decision.errors]
    assert fake.problems == []


def test_plain_bearer_when_dpop_is_off(spec: dict[str, Any], client_key: ClientKey) -> None:
    service = make_fake(spec, client_key, dpop=False).start()
    try:
        client = client_for(service, client_key, dpop=False)
        assert client.unread() == []
        assert client.tokens.proof_key is None
        assert service.problems == []
    finally:
        service.stop()


def test_client_without_dpop_is_refused_where_dpop_is_required(
    fake: FakeService, client_key: ClientKey
) -> None:
    with pytest.raises(Edi2AuthError, match="invalid_request"):
        client_for(fake, client_key, dpop=False).unread()
    assert "token: no DPoP proof" in fake.problems


def test_ec_jwk_key_with_its_own_kid(spec: dict[str, Any], tmp_path: Path) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(ECAlgorithm.to_jwk(private)) | {"kid": "registered-kid-1"}
    path = tmp_path / "key.jwk"
    path.write_text(json.dumps(jwk))
    key = ClientKey(path, private, "registered-kid-1")  # type: ignore[arg-type]
    service = FakeService(spec, "pfhjem-test-client", private.public_key(), "registered-kid-1").start()
    try:
        assert client_for(service, key).unread() == []
        assert service.problems == []
    finally:
        service.stop()


def test_kid_defaults_to_the_keys_thumbprint(client_key: ClientKey) -> None:
    key = load_signing_key(client_key.path)
    assert key.algorithm == "RS256"
    assert key.kid == client_key.kid == jwk_thumbprint(key.public_jwk())


@pytest.mark.parametrize("content", [b"", b"not a key", b'{"kty": "RSA", "n": "AQAB", "e": "AQAB"}'])
def test_unusable_key_file_is_a_config_error_naming_the_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"key\.pem") as caught:
        load_signing_key(path)
    assert "not a key" not in str(caught.value)


def test_private_key_never_in_repr_or_logs(fake: FakeService, client_key: ClientKey) -> None:
    settings = settings_for(fake, client_key)
    key = load_signing_key(client_key.path)
    client = client_for(fake, client_key)
    client.unread()
    token = client.tokens.token()
    pem = client_key.path.read_text()
    shown = repr(settings) + repr(settings.helseid) + repr(key) + repr(token)
    assert str(client_key.path) not in shown and pem[40:80] not in shown and token.value not in shown
    assert pickle.loads(pickle.dumps(settings)) == settings


def test_replayed_dpop_proof_is_refused(fake: FakeService, client_key: ClientKey) -> None:
    """A proof captured on the wire and sent again (same jti) does not pass."""
    captured: list[httpx.Request] = []
    client = client_for(fake, client_key)
    client.http.event_hooks["request"] = [captured.append]
    client.unread()
    listing = next(r for r in captured if r.url.path == "/Messages")
    replayed = httpx.get(str(listing.url), headers=dict(listing.headers))
    assert replayed.status_code == 401
    assert "DPoP: jti used twice" in fake.problems


def test_client_assertion_signed_with_another_key_is_refused(
    fake: FakeService, client_key: ClientKey, tmp_path: Path
) -> None:
    """Same kid, same algorithm, another RSA key: the signature does not verify."""
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "other.pem"
    path.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))  # fmt: skip
    with pytest.raises(Edi2AuthError, match="registered public key"):
        client_for(fake, ClientKey(path, client_key.private, client_key.kid)).unread()
    assert any(p.startswith("client assertion: InvalidSignatureError") for p in fake.problems)


def test_fake_refuses_what_the_description_does_not_allow(fake: FakeService, client_key: ClientKey) -> None:
    """The fake's checks have teeth: a body outside the schema and a missing required header
    are refused with 400 and named."""
    sid = fake.add_inbound(DOC, OUR_HER, SENDER_HER)
    client = client_for(fake, client_key)
    with pytest.raises(Edi2RequestRejected) as caught:
        client._call("POST", f"/Messages/{sid}/apprec/{OUR_HER}", "a malformed AppRec",
                     json={"appRecStatus": 1, "extra": True}, expect=(201,))  # fmt: skip
    assert caught.value.status == 400
    assert any("body.appRecStatus: expected string" in p for p in fake.problems)
    assert any("property 'extra' not in the schema" in p for p in fake.problems)

    class Anonymous(Edi2Client):
        def _headers(self, method: str, url: str, token: Token) -> dict[str, str]:
            return {k: v for k, v in super()._headers(method, url, token).items() if k != "nhn-source-system"}

    with pytest.raises(Edi2RequestRejected):
        Anonymous(settings_for(fake, client_key)).unread()
    assert any("required header parameter nhn-source-system missing" in p for p in fake.problems)
    assert fake.apprec_posts == []
