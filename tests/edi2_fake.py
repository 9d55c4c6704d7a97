"""A local stand-in for Norsk helsenett's message service and for HelseID's token endpoint,
written from the service's OpenAPI description. It is a mock only because the real service
cannot be reached from here; everything it can check, it checks:

- every API request against the description: the operation exists, required headers and
  parameters are there and well-formed, the body matches its schema; and every answer the
  fake gives matches the description too, so the fake cannot drift from it;
- the client assertion (signature with the registered key, ``kid``, ``iss``/``sub``/``aud``,
  short lifetime, ``jti`` used once) and every DPoP proof (``typ``, signature with the key in
  its header, ``htm``, ``htu``, ``iat``, ``jti`` used once, the nonce when one was asked for,
  ``ath`` and the token's binding to the proof key).

Problems are collected in ``problems`` (a test asserts it is empty) and answered with 400, as
the service would. Failures can be injected per operation: a status (401, 500, ...), a stall
longer than the client's timeout, refused tokens; unread messages can be listed twice or
delivered again after being read. AppRec POSTs are counted.

The description is read from ``../shared/edi2/msh-api-v2.json`` at test time; tests that use
the fake skip when it is absent.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

SPEC_PATH = Path(__file__).resolve().parent.parent.parent / "shared" / "edi2" / "msh-api-v2.json"
TOKEN_PATH = "/connect/token"
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
DATE_TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?$")


def load_spec() -> dict[str, Any] | None:
    if not SPEC_PATH.is_file():
        return None
    loaded: dict[str, Any] = json.loads(SPEC_PATH.read_text(encoding="utf-8"))
    return loaded


# -- a small JSON-schema checker for the subset the description uses ----------------------------


class SchemaChecker:
    """``$ref``, ``allOf``, ``type``, ``nullable``, ``enum``, ``required``, ``properties``,
    ``additionalProperties: false``, ``items``, ``uniqueItems``, string lengths, number bounds
    and the formats ``uuid``, ``int32`` and ``date-time``. Anything else in a schema is a
    problem of its own, so a change in the description cannot be silently ignored."""

    KNOWN = frozenset({
        "$ref", "allOf", "type", "nullable", "enum", "required", "properties", "additionalProperties",
        "items", "uniqueItems", "minLength", "maxLength", "minimum", "maximum", "format",
        "description", "example",
    })  # fmt: skip

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            node: Any = self.spec
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def check(self, schema: dict[str, Any], value: Any, where: str = "$") -> list[str]:
        schema = self.resolve(schema)
        unknown = set(schema) - self.KNOWN
        if unknown:
            return [f"{where}: schema keyword(s) {sorted(unknown)} not understood by the checker"]
        if value is None:
            return [] if schema.get("nullable") else [f"{where}: null where a value is required"]
        problems: list[str] = []
        for part in schema.get("allOf", []):
            problems += self.check(part, value, where)
        kind = schema.get("type")
        type_ok = {
            None: True,
            "object": isinstance(value, dict),
            "array": isinstance(value, list),
            "string": isinstance(value, str),
            "integer": isinstance(value, int) and not isinstance(value, bool),
            "number": isinstance(value, int | float) and not isinstance(value, bool),
            "boolean": isinstance(value, bool),
        }.get(kind, False)
        if not type_ok:
            return [*problems, f"{where}: expected {kind}, got {type(value).__name__}"]
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{where}: {value!r} is not one of {schema['enum']}")
        if isinstance(value, str):
            if len(value) < schema.get("minLength", 0):
                problems.append(f"{where}: shorter than {schema['minLength']}")
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                problems.append(f"{where}: longer than {schema['maxLength']}")
            fmt = schema.get("format")
            if fmt == "uuid" and not UUID_RE.match(value):
                problems.append(f"{where}: not a uuid")
            if fmt == "date-time" and not DATE_TIME_RE.match(value):
                problems.append(f"{where}: not a date-time")
        if isinstance(value, int) and not isinstance(value, bool):
            if "minimum" in schema and value < schema["minimum"]:
                problems.append(f"{where}: below {schema['minimum']}")
            if "maximum" in schema and value > schema["maximum"]:
                problems.append(f"{where}: above {schema['maximum']}")
            if schema.get("format") == "int32" and not -(2**31) <= value < 2**31:
                problems.append(f"{where}: not an int32")
        if isinstance(value, list):
            if schema.get("uniqueItems") and len({json.dumps(v, sort_keys=True) for v in value}) != len(
                value
            ):
                problems.append(f"{where}: items not unique")
            for i, item in enumerate(value):
                problems += self.check(schema.get("items", {}), item, f"{where}[{i}]")
        if isinstance(value, dict):
            props = schema.get("properties", {})
            for name in schema.get("required", []):
                if name not in value:
                    problems.append(f"{where}: missing required {name!r}")
            for name, item in value.items():
                if name in props:
                    problems += self.check(props[name], item, f"{where}.{name}")
                elif schema.get("additionalProperties", True) is False:
                    problems.append(f"{where}: property {name!r} not in the schema")
        return problems


def _param_value(schema: dict[str, Any], raw: list[str]) -> Any:
    """A query, path or header parameter's text as the JSON value its schema describes."""
    kind = schema.get("type")
    if kind == "array":
        inner = schema.get("items", {})
        return [_param_value(inner, [v]) for v in raw]
    value = raw[0]
    if kind == "integer":
        return int(value) if re.fullmatch(r"-?\d+", value) else value
    if kind == "boolean":
        return {"true": True, "false": False}.get(value, value)
    return value


# -- the fake's state ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jwk_thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638, written here from the RFC (not taken from the product) so the check is independent."""
    members = ("e", "kty", "n") if jwk.get("kty") == "RSA" else ("crv", "kty", "x", "y")
    text = "{" + ",".join(f'"{m}":"{jwk[m]}"' for m in members) + "}"
    return _b64url(hashlib.sha256(text.encode()).digest())


@dataclass
class Inbound:
    """A message waiting for us at the service."""

    id: str
    receiver_her: int
    sender_her: int
    document: bytes
    is_apprec: bool = False
    msg_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    read: bool = False
    apprec: dict[str, Any] | None = None


@dataclass
class Outbound:
    """A message we sent through the service."""

    id: str
    document: bytes
    receivers: list[int] | None
    apprecs: dict[int, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Injection:
    operation: str
    status: int | None = None
    stall: float = 0.0
    times: int = 1
    headers: dict[str, str] = field(default_factory=dict)


class FakeService:
    def __init__(self, spec: dict[str, Any], client_id: str, public_key: Any, kid: str,
                 dpop: bool = True, token_seconds: int = 300) -> None:  # fmt: skip
        self.spec = spec
        self.schemas = SchemaChecker(spec)
        self.client_id = client_id
        self.public_key = public_key
        self.kid = kid
        self.dpop = dpop
        self.token_seconds = token_seconds
        self.lock = threading.RLock()
        self.problems: list[str] = []
        self.inbound: dict[str, Inbound] = {}
        self.outbound: dict[str, Outbound] = {}
        self.apprec_posts: list[tuple[str, int, dict[str, Any]]] = []
        self.reads: list[tuple[str, int]] = []
        self.calls: list[str] = []
        """operationId (or ``token``) of every request, in order."""
        self.tokens: dict[str, tuple[str | None, float]] = {}
        """access token → (the DPoP key thumbprint it is bound to, expiry)."""
        self.token_requests = 0
        self.token_nonce: str | None = None
        """When set, the token endpoint wants this nonce in the proof."""
        self.api_nonce: str | None = None
        """When set, the API wants this nonce in every proof."""
        self.refuse_tokens = False
        self.duplicate_listing = False
        self.seen_jti: set[str] = set()
        self.injections: list[Injection] = []
        self._routes = self._compile_routes()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = False
        self.server.block_on_close = True  # server_close joins every connection's thread
        self.stopping = threading.Event()
        self.connections: set[socket.socket] = set()
        # a client killed mid-request (the crash test) is no problem of the service's: no traceback
        self.server.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.base_url = f"http://127.0.0.1:{self.server.server_port}"
        self.token_url = self.base_url + TOKEN_PATH
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    # -- setting up ---------------------------------------------------------------------------

    def start(self) -> FakeService:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end every connection's thread: a thread left behind (a kept-alive
        connection, a stalled answer) would make later tests in the process see other threads,
        and code that forks only without them (``validate``'s helpers) would behave otherwise."""
        self.stopping.set()
        self.server.shutdown()
        with self.lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
        self.server.server_close()

    def add_inbound(
        self, document: bytes, receiver_her: int, sender_her: int, is_apprec: bool = False
    ) -> str:
        with self.lock:
            msg = Inbound(str(uuid.uuid4()), receiver_her, sender_her, document, is_apprec)
            self.inbound[msg.id] = msg
            return msg.id

    def inject(self, operation: str, status: int | None = None, stall: float = 0.0, times: int = 1,
               headers: dict[str, str] | None = None) -> None:  # fmt: skip
        """The next ``times`` calls of ``operation`` (an operationId, or ``token``) answer
        ``status`` (after ``stall`` seconds), or are only delayed when ``status`` is None."""
        with self.lock:
            self.injections.append(Injection(operation, status, stall, times, headers or {}))

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def redeliver(self, message_id: str) -> None:
        """The service lists a message it had marked read again (a duplicate delivery)."""
        with self.lock:
            self.inbound[message_id].read = False

    def answer_outbound(
        self, message_id: str, receiver_her: int, status: str, errors: list[dict[str, Any]]
    ) -> None:
        """The receiver's AppRec for a message we sent."""
        with self.lock:
            self.outbound[message_id].apprecs[receiver_her] = {
                "appRecStatus": status,
                "appRecErrorList": errors,
            }

    def posts_for(self, message_id: str) -> int:
        return sum(1 for m, _, _ in self.apprec_posts if m == message_id)

    # -- routing ------------------------------------------------------------------------------

    def _compile_routes(self) -> list[tuple[str, re.Pattern[str], dict[str, Any], list[str]]]:
        routes = []
        for template, ops in self.spec["paths"].items():
            names = re.findall(r"{(\w+)}", template)
            pattern = re.compile("^" + re.sub(r"{\w+}", "([^/]+)", template) + "$")
            for method, op in ops.items():
                routes.append((method.upper(), pattern, op, names))
        return routes

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], Any]:
        parts = urlsplit(target)
        if parts.path == TOKEN_PATH and method == "POST":
            with self.lock:
                self.calls.append("token")
            injected = self._injected("token")
            if injected is not None:
                return injected
            return self._token(headers, body)
        for route_method, pattern, op, names in self._routes:
            match = pattern.match(parts.path)
            if route_method == method and match:
                path_params = dict(zip(names, match.groups(), strict=True))
                return self._api(method, parts.path, op, path_params, parts.query, headers, body)
        return self._problem(404, [f"{method} {parts.path} is not in the description"])

    def _injected(self, operation: str) -> tuple[int, dict[str, str], Any] | None:
        with self.lock:
            found = next((i for i in self.injections if i.operation == operation and i.times > 0), None)
            if found is not None:
                found.times -= 1
        if found is None:
            return None
        if found.stall:
            self.stopping.wait(found.stall)
        if found.status is None:
            return None
        body = {"error": "injected", "errorCode": 0, "validationErrors": None, "stackTrace": None,
                "requestId": str(uuid.uuid4())}  # fmt: skip
        return found.status, found.headers, body

    def _problem(self, status: int, problems: list[str]) -> tuple[int, dict[str, str], Any]:
        with self.lock:
            self.problems += problems
        body = {"error": "Model validation error occurred", "errorCode": 1000, "validationErrors": problems,
                "stackTrace": None, "requestId": str(uuid.uuid4())}  # fmt: skip
        return status, {}, body

    # -- the token endpoint -------------------------------------------------------------------

    def _token(self, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:
        self.token_requests += 1
        form = dict(parse_qsl(body.decode("ascii")))
        problems = []
        if headers.get("content-type", "").split(";")[0] != "application/x-www-form-urlencoded":
            problems.append("token: body is not form-encoded")
        if form.get("grant_type") != "client_credentials":
            problems.append("token: grant_type is not client_credentials")
        if form.get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer":
            problems.append("token: wrong client_assertion_type")
        if not form.get("scope"):
            problems.append("token: no scope")
        problems += self._check_assertion(form.get("client_assertion", ""))
        jkt = None
        if self.dpop:
            proof = headers.get("dpop")
            if proof is None:
                problems.append("token: no DPoP proof")
            else:
                checked, jkt = self._check_proof(proof, "POST", self.token_url, self.token_nonce, None)
                if checked == "nonce":
                    return 400, {"DPoP-Nonce": self.token_nonce or ""}, {"error": "use_dpop_nonce"}
                problems += checked
        if problems:
            with self.lock:
                self.problems += problems
            return 400, {}, {"error": "invalid_request"}
        if self.refuse_tokens:
            return 400, {}, {"error": "invalid_client"}
        token = secrets.token_urlsafe(32)
        with self.lock:
            self.tokens[token] = (jkt, time.time() + self.token_seconds)
        kind = "DPoP" if self.dpop else "Bearer"
        return 200, {}, {"access_token": token, "token_type": kind, "expires_in": self.token_seconds,
                         "scope": form.get("scope")}  # fmt: skip

    def _once(self, jti: Any, what: str) -> list[str]:
        with self.lock:
            if not isinstance(jti, str) or not jti:
                return [f"{what}: no jti"]
            if jti in self.seen_jti:
                return [f"{what}: jti used twice"]
            self.seen_jti.add(jti)
        return []

    def _check_assertion(self, assertion: str) -> list[str]:
        try:
            header = jwt.get_unverified_header(assertion)
            algorithms = ["RS256"] if isinstance(self.public_key, rsa.RSAPublicKey) else ["ES256"]
            claims = jwt.decode(assertion, self.public_key, algorithms=algorithms, audience=self.token_url,
                                issuer=self.client_id, options={"require": ["exp", "iat", "jti", "sub"]})  # fmt: skip
        except (jwt.PyJWTError, TypeError, ValueError) as exc:
            return [f"client assertion: {type(exc).__name__}: {exc}"]
        problems = []
        if header.get("kid") != self.kid:
            problems.append("client assertion: kid is not the registered key's")
        if claims["sub"] != self.client_id:
            problems.append("client assertion: sub is not the client id")
        if not 0 < claims["exp"] - claims["iat"] <= 120:
            problems.append("client assertion: lifetime not short")
        return problems + self._once(claims["jti"], "client assertion")

    def _check_proof(self, proof: str, method: str, url: str, nonce: str | None,
                     token: str | None) -> tuple[list[str] | str, str | None]:  # fmt: skip
        """Problems (or ``"nonce"`` when the nonce is missing or stale) and the proof key's thumbprint."""
        try:
            header = jwt.get_unverified_header(proof)
            jwk = header.get("jwk")
            if header.get("typ") != "dpop+jwt" or not isinstance(jwk, dict) or "d" in jwk:
                return ["DPoP: typ is not dpop+jwt, or no public jwk in the header"], None
            key = jwt.PyJWK(jwk).key
            claims = jwt.decode(proof, key, algorithms=["ES256", "RS256"], options={"verify_aud": False})
        except jwt.PyJWTError as exc:
            return [f"DPoP: {type(exc).__name__}: {exc}"], None
        problems = []
        if claims.get("htm") != method:
            problems.append(f"DPoP: htm {claims.get('htm')} is not {method}")
        if claims.get("htu") != url:
            problems.append(f"DPoP: htu {claims.get('htu')} is not {url}")
        if not isinstance(claims.get("iat"), int) or abs(time.time() - claims["iat"]) > 60:
            problems.append("DPoP: iat missing or not recent")
        if token is not None:
            want = _b64url(hashlib.sha256(token.encode("ascii")).digest())
            if claims.get("ath") != want:
                problems.append("DPoP: ath is not the hash of the access token")
        if nonce is not None and claims.get("nonce") != nonce and not problems:
            return "nonce", None
        problems += self._once(claims.get("jti"), "DPoP")
        return problems, jwk_thumbprint(jwk)

    # -- the API ------------------------------------------------------------------------------

    def _api(self, method: str, path: str, op: dict[str, Any], path_params: dict[str, str], query: str,
             headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], Any]:  # fmt: skip
        name = op["operationId"]
        with self.lock:
            self.calls.append(name)
        injected = self._injected(name)
        if injected is not None:
            return injected
        auth = self._authorize(method, self.base_url + path, headers)
        if auth is not None:
            return auth
        problems = self._check_request(op, path_params, query, headers, body)
        if problems:
            return self._problem(400, [f"{name}: {p}" for p in problems])
        payload = json.loads(body) if body else None
        with self.lock:
            status, answer = getattr(self, "_op_" + name)(path_params, _query(query), payload)
        response_schema = op["responses"].get(str(status), {}).get("content", {}).get("application/json")
        if response_schema is not None:
            drift = self.schemas.check(response_schema["schema"], answer)
            if drift:
                self.problems += [f"{name} answer drifts from the description: {p}" for p in drift]
        elif str(status) not in op["responses"]:
            self.problems.append(f"{name}: answer {status} is not in the description")
        return status, {}, answer

    def _authorize(
        self, method: str, url: str, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], Any] | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        with self.lock:
            bound = self.tokens.get(token)
        unauthorized = (401, {"WWW-Authenticate": "DPoP" if self.dpop else "Bearer"}, None)
        if bound is None or bound[1] < time.time():
            return unauthorized
        if not self.dpop:
            return None if scheme == "Bearer" else self._problem(401, ["a bearer token not sent as Bearer"])
        if scheme != "DPoP":
            return self._problem(401, ["a DPoP token sent as " + scheme])
        proof = headers.get("dpop")
        if proof is None:
            return self._problem(401, ["an API call without a DPoP proof"])
        checked, jkt = self._check_proof(proof, method, url, self.api_nonce, token)
        if checked == "nonce":
            return (
                401,
                {"WWW-Authenticate": 'DPoP error="use_dpop_nonce"', "DPoP-Nonce": self.api_nonce or ""},
                None,
            )
        if checked:
            return self._problem(401, list(checked))
        if jkt != bound[0]:
            return self._problem(401, ["the DPoP proof's key is not the one the token is bound to"])
        return None

    def _check_request(self, op: dict[str, Any], path_params: dict[str, str], query: str,
                       headers: dict[str, str], body: bytes) -> list[str]:  # fmt: skip
        problems = []
        given: dict[str, dict[str, list[str]]] = {"path": {k: [v] for k, v in path_params.items()}, "query": {},
                                                  "header": {}}  # fmt: skip
        for k, v in _query(query):
            given["query"].setdefault(k, []).append(v)
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "query"}
        for k in given["query"]:
            if k not in declared:
                problems.append(f"query parameter {k} is not in the description")
        for p in op.get("parameters", []):
            where, name = p["in"], p["name"]
            raw = (
                [headers[name.lower()]]
                if where == "header" and name.lower() in headers
                else given[where].get(name)
            )
            if raw is None:
                if p.get("required"):
                    problems.append(f"required {where} parameter {name} missing")
                continue
            problems += self.schemas.check(
                p["schema"], _param_value(self.schemas.resolve(p["schema"]), raw), name
            )
        if headers.get("api-version") not in (None, "2"):
            problems.append("api-version is not 2")
        if "requestBody" in op:
            ctype = headers.get("content-type", "").split(";")[0].strip()
            content = op["requestBody"]["content"]
            if ctype not in content:
                return [*problems, f"content type {ctype!r} not one of {sorted(content)}"]
            try:
                payload = json.loads(body)
            except ValueError:
                return [*problems, "body is not JSON"]
            problems += self.schemas.check(content[ctype]["schema"], payload, "body")
        elif body:
            problems.append("a body where the description has none")
        return problems

    def _unknown(self, what: str) -> tuple[int, Any]:
        return 404, {"error": f"Could not find {what}", "errorCode": 0, "validationErrors": None,
                     "stackTrace": None, "requestId": str(uuid.uuid4())}  # fmt: skip

    def _op_GetMessages(self, p: dict[str, str], q: list[tuple[str, str]], _: Any) -> tuple[int, Any]:
        wanted = {int(v) for k, v in q if k == "ReceiverHerIds"}
        limit = int(dict(q).get("MessagesToFetch", "10"))
        meta = dict(q).get("IncludeMetadata") == "true"
        out = []
        for m in self.inbound.values():
            if m.read or m.receiver_her not in wanted:
                continue
            item: dict[str, Any] = {"id": m.id, "receiverHerId": m.receiver_her}
            if meta:
                item |= {"senderHerId": m.sender_her, "businessDocumentId": m.msg_id,
                         "businessDocumentGenDate": "2026-11-28T10:00:00+01:00", "isAppRec": m.is_apprec}  # fmt: skip
            out.append(item)
        out = out[:limit]
        if self.duplicate_listing:
            out = [x for item in out for x in (item, item)]
        return 200, out

    def _op_GetMessage(self, p: dict[str, str], q: list[tuple[str, str]], _: Any) -> tuple[int, Any]:
        m = self.inbound.get(p["id"])
        if m is None:
            return self._unknown("database document")
        return 200, {"id": m.id, "receiverHerId": m.receiver_her, "senderHerId": m.sender_her,
                     "businessDocumentId": m.msg_id, "isAppRec": m.is_apprec}  # fmt: skip

    def _op_GetBusinessDocument(self, p: dict[str, str], q: list[tuple[str, str]], _: Any) -> tuple[int, Any]:
        m = self.inbound.get(p["id"])
        if m is None:
            return self._unknown("database document")
        return 200, {"businessDocument": base64.b64encode(m.document).decode(), "contentType": "application/xml",
                     "contentTransferEncoding": "base64"}  # fmt: skip

    def _op_PostAppRec(self, p: dict[str, str], q: list[tuple[str, str]], body: Any) -> tuple[int, Any]:
        m = self.inbound.get(p["id"])
        if m is None:
            return self._unknown("database document")
        self.apprec_posts.append((m.id, int(p["appRecSenderHerId"]), body))
        if body["appRecStatus"] == "Rejected" and not body.get("appRecErrorList"):
            return self._problem(400, ["PostAppRec: Rejected without an error list"])[::2]
        m.apprec = {"receiverHerId": int(p["appRecSenderHerId"]), "appRecStatus": body["appRecStatus"],
                    "appRecErrorList": body.get("appRecErrorList")}  # fmt: skip
        return 201, str(uuid.uuid4())

    def _op_MarkMessageAsRead(self, p: dict[str, str], q: list[tuple[str, str]], _: Any) -> tuple[int, Any]:
        m = self.inbound.get(p["id"])
        if m is None:
            return self._unknown("message")
        m.read = True
        self.reads.append((m.id, int(p["herId"])))
        return 204, None

    def _op_PostMessage(self, p: dict[str, str], q: list[tuple[str, str]], body: Any) -> tuple[int, Any]:
        document = base64.b64decode(body["businessDocument"], validate=True)
        first = document.split(b"\n", 1)[0]
        if not re.match(rb"<\?xml [^>]*encoding=[\"']utf-8[\"']", first, re.IGNORECASE):
            return self._problem(400, ["PostMessage: the document does not declare UTF-8 in its first line"])[
                ::2
            ]
        try:
            document.decode("utf-8")
        except UnicodeDecodeError:
            return self._problem(400, ["PostMessage: the document is not UTF-8"])[::2]
        msg = Outbound(str(uuid.uuid4()), document, body.get("receiverHerIdsSubset"))
        self.outbound[msg.id] = msg
        return 201, msg.id

    def _op_GetApprecInfo(self, p: dict[str, str], q: list[tuple[str, str]], _: Any) -> tuple[int, Any]:
        if p["id"] in self.inbound:
            m = self.inbound[p["id"]]
            return 200, [
                m.apprec or {"receiverHerId": m.receiver_her, "appRecStatus": None, "appRecErrorList": None}
            ]
        sent = self.outbound.get(p["id"])
        if sent is None:
            return self._unknown("database document")
        return 200, [{"receiverHerId": her, **a} for her, a in sent.apprecs.items()]

    def _op_GetStatus(self, p: dict[str, str], q: list[tuple[str, str]], _: Any) -> tuple[int, Any]:
        sent = self.outbound.get(p["id"])
        if sent is None:
            return self._unknown("database document")
        return 200, [{"receiverHerId": her, "transportDeliveryState": "Acknowledged", "appRecStatus": a["appRecStatus"]}
                     for her, a in sent.apprecs.items()]  # fmt: skip


def _query(query: str) -> list[tuple[str, str]]:
    return parse_qsl(query, keep_blank_values=True)


def _handler(fake: FakeService) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # test output stays quiet

        def setup(self) -> None:
            super().setup()
            with fake.lock:
                fake.connections.add(self.connection)

        def finish(self) -> None:
            with fake.lock:
                fake.connections.discard(self.connection)
            with contextlib.suppress(OSError):
                super().finish()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if len(body) < length:  # the client died mid-request (the crash test): nothing arrived
                self.close_connection = True
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, extra, answer = fake.handle(self.command, self.path, headers, body)
            data = b"" if answer is None else json.dumps(answer).encode()
            try:
                self.send_response(status)
                for k, v in extra.items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up waiting (an injected stall)

        do_GET = do_POST = do_PUT = _serve

    return Handler


def serve(fake: FakeService) -> Iterator[FakeService]:
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
