"""Fixtures for the EDI 2.0 tests (the fake itself is ``tests/edi2_fake.py``): keys made here (never committed), the fake service, and
settings pointing at it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from pfhjem_msg.edi2.client import Edi2Client
from pfhjem_msg.edi2.settings import Edi2Settings, HelseIdSettings
from tests.edi2_fake import SPEC_PATH, FakeService, jwk_thumbprint, load_spec

CLIENT_ID = "pfhjem-test-client"
OUR_HER = 8100001
OTHER_HER = 8100002
SENDER_HER = 9200001


@dataclass
class ClientKey:
    path: Path
    private: rsa.RSAPrivateKey
    kid: str


@pytest.fixture(scope="session")
def spec() -> dict[str, Any]:
    loaded = load_spec()
    if loaded is None:
        pytest.skip(f"the message service's OpenAPI description is not at {SPEC_PATH} (../shared/ is absent)")
    return loaded


@pytest.fixture(scope="session")
def rsa_private() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def client_key(tmp_path: Path, rsa_private: rsa.RSAPrivateKey) -> ClientKey:
    path = tmp_path / "helseid-key.pem"
    path.write_bytes(rsa_private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))  # fmt: skip
    public = json.loads(RSAAlgorithm.to_jwk(rsa_private.public_key()))
    return ClientKey(path, rsa_private, jwk_thumbprint(public))


def make_fake(spec: dict[str, Any], key: ClientKey, **kw: Any) -> FakeService:
    return FakeService(spec, CLIENT_ID, key.private.public_key(), key.kid, **kw)


@pytest.fixture
def fake(spec: dict[str, Any], client_key: ClientKey) -> Iterator[FakeService]:
    service = make_fake(spec, client_key).start()
    yield service
    service.stop()


def settings_for(fake: FakeService, key: ClientKey, dpop: bool = True, **kw: Any) -> Edi2Settings:
    helseid = HelseIdSettings(
        token_url=fake.token_url,
        client_id=CLIENT_ID,
        scope="nhn:msh/api",
        private_key=key.path,
        dpop=dpop,
        renew_before_seconds=kw.pop("renew_before_seconds", 60),
    )
    values: dict[str, Any] = {"timeout": 1.0, "her_ids": (OUR_HER, OTHER_HER)} | kw
    return Edi2Settings(base_url=fake.base_url, helseid=helseid, **values)


def client_for(fake: FakeService, key: ClientKey, dpop: bool = True, **kw: Any) -> Edi2Client:
    return Edi2Client(settings_for(fake, key, dpop, **kw))
