"""Issue 12: the JWT audience is never taken from request headers in production, JWKs without `alg`
interoperate, NumericDate claims are numbers, the Authorization header is bounded, issuers' keys come
over https, and service ids cannot be probed without a token."""

from __future__ import annotations

import base64
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.config import Issuer, Settings
from tests.hooks import requests as rq
from tests.hooks.conftest import make_client

BASE = "https://cds.hospital.example"
ISS = "https://ehr.hospital.example/fhir"
SVC = "/cds-services/pgx-order-select"
DISCOVERY = "/cds-services"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_EC = ec.generate_private_key(ec.SECP384R1())


def _jwk(key, kid: str, alg: str | None) -> dict:
    d = json.loads(jwt.algorithms.get_default_algorithms()["RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES384"]
                   .to_jwk(key.public_key()))
    d.update(kid=kid, use="sig")
    if alg:
        d["alg"] = alg
    return d


JWKS = {"keys": [_jwk(_RSA, "rsa-no-alg", None), _jwk(_EC, "ec-no-alg", None), _jwk(_EC, "ec", "ES384")]}


def _token(aud, *, key=_EC, alg="ES384", kid="ec", **claims) -> str:
    now = int(time.time())
    payload = {"iss": ISS, "aud": aud, "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()), **claims}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def H(tok: str) -> dict:
    return {"Authorization": f"Bearer {tok}"}


@pytest.fixture
def prod(tmp_path):
    with make_client(issuers=[Issuer(iss=ISS, jwks=JWKS, fhir_servers=[ISS])], public_base_url=BASE,
                     feedback_file=tmp_path / "fb.ndjson") as c:
        yield c


# --------------------------------------------------------------------------- audience


def test_production_refuses_to_start_without_an_explicit_audience():
    with pytest.raises(ValueError, match="public_base_url"):
        Settings(issuers=[Issuer(iss=ISS, jwks=JWKS)])
    Settings(issuers=[Issuer(iss=ISS, jwks=JWKS)], public_base_url=BASE)  # either the base URL
    Settings(issuers=[Issuer(iss=ISS, jwks=JWKS, audiences=[BASE + "/cds"])])  # or every issuer's audiences
    Settings(profile="dev", issuers=[Issuer(iss=ISS, jwks=JWKS)])  # the dev profile stays convenient
    Settings()  # dev mode (no issuers): nothing is authenticated


def test_serve_refuses_to_start_without_an_audience_in_production():
    from tests.test_cli import cli

    r = cli("serve", env={"PGX_CDS_ISSUERS": json.dumps([{"iss": ISS, "jwks_url": "https://ehr.example/jwks"}])})
    assert r.returncode == 2 and "public_base_url" in r.stderr


def test_production_never_derives_the_audience_from_the_host_header(tmp_path):
    with make_client(issuers=[Issuer(iss=ISS, jwks=JWKS, audiences=["urn:pgx-cds:hospital"])],
                     feedback_file=tmp_path / "fb.ndjson") as c:
        # a token minted for another deployment, sent with that deployment's Host header
        other = "http://other-deployment.example"
        r = c.get(DISCOVERY, headers={**H(_token(other + DISCOVERY)), "Host": "other-deployment.example"})
        assert r.status_code == 401
        r = c.get(DISCOVERY, headers=H(_token("http://testserver" + DISCOVERY)))  # the URL as this request names it
        assert r.status_code == 401
        assert c.get(DISCOVERY, headers=H(_token("urn:pgx-cds:hospital"))).status_code == 200


def test_dev_profile_with_issuers_still_takes_the_audience_from_the_url(tmp_path):
    with make_client(profile="dev", issuers=[Issuer(iss=ISS, jwks=JWKS)], feedback_file=tmp_path / "fb.ndjson") as c:
        assert c.get(DISCOVERY, headers=H(_token("http://testserver" + DISCOVERY))).status_code == 200


def test_proxy_headers_are_trusted_only_from_configured_addresses(monkeypatch):
    import uvicorn
    from typer.testing import CliRunner

    from service.cli import app

    seen: list[dict] = []
    monkeypatch.setattr(uvicorn, "run", lambda *a, **kw: seen.append(kw))
    for k in [k for k in __import__("os").environ if k.startswith("PGX_CDS_")]:
        monkeypatch.delenv(k)
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert seen[-1]["proxy_headers"] is False  # default: X-Forwarded-* ignored
    monkeypatch.setenv("PGX_CDS_FORWARDED_ALLOW_IPS", '["10.0.0.7"]')
    assert CliRunner().invoke(app, ["serve"]).exit_code == 0
    assert seen[-1]["proxy_headers"] is True and seen[-1]["forwarded_allow_ips"] == ["10.0.0.7"]


# --------------------------------------------------------------------------- JWT interop and strictness


def test_rsa_jwk_without_alg_verifies_rs384_and_rs512(prod):
    for alg in ("RS384", "RS512", "RS256"):
        assert prod.get(DISCOVERY, headers=H(_token(BASE + DISCOVERY, key=_RSA, alg=alg, kid="rsa-no-alg"))).status_code == 200


def test_ec_jwk_without_alg_verifies_its_curves_algorithm_only(prod):
    assert prod.get(DISCOVERY, headers=H(_token(BASE + DISCOVERY, kid="ec-no-alg"))).status_code == 200
    # a key without `alg` does not accept an algorithm of another key type or curve
    rs_on_ec = _token(BASE + DISCOVERY, key=_RSA, alg="RS384", kid="ec-no-alg")
    assert prod.get(DISCOVERY, headers=H(rs_on_ec)).status_code == 401
    es_on_rsa = _token(BASE + DISCOVERY, key=_EC, alg="ES384", kid="rsa-no-alg")
    assert prod.get(DISCOVERY, headers=H(es_on_rsa)).status_code == 401


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_numeric_dates_given_as_strings_are_rejected(prod, claim):
    now = int(time.time())
    value = {"exp": now + 300, "iat": now, "nbf": now - 10}[claim]
    assert prod.get(DISCOVERY, headers=H(_token(BASE + DISCOVERY, **{claim: value}))).status_code == 200
    assert prod.get(DISCOVERY, headers=H(_token(BASE + DISCOVERY, **{claim: str(value)}))).status_code == 401


def test_a_never_expiring_token_is_rejected_not_an_error(prod):
    # json.dumps writes Infinity; Python's JSON reader accepts it
    r = prod.get(DISCOVERY, headers=H(_token(BASE + DISCOVERY, exp=float("inf"))))
    assert r.status_code == 401


def _b64(obj) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize("header", [{"alg": ["ES384"], "kid": "ec"}, {"alg": "ES384", "kid": "ec", "jku": ["x"]}])
def test_header_members_of_the_wrong_type_are_401_not_500(prod, header):
    now = int(time.time())
    tok = f"{_b64(header)}.{_b64({'iss': ISS, 'aud': BASE + DISCOVERY, 'iat': now, 'exp': now + 60, 'jti': 'j'})}.AAAA"
    assert prod.get(DISCOVERY, headers=H(tok)).status_code == 401


def test_oversized_authorization_header_is_refused(prod):
    big = _token(BASE + DISCOVERY, pad="x" * 20_000)  # validly signed, but 20 kB
    assert prod.get(DISCOVERY, headers=H(big)).status_code == 401
    assert prod.get(DISCOVERY, headers=H(_token(BASE + DISCOVERY, pad="x" * 1000))).status_code == 200


def test_plain_http_jwks_url_refused_in_production():
    with pytest.raises(ValueError, match="https"):
        Settings(issuers=[Issuer(iss=ISS, jwks_url="http://ehr.hospital.example/jwks")], public_base_url=BASE)
    with pytest.raises(ValueError, match="https"):
        Settings(issuers=[Issuer(iss=ISS, jwks=JWKS, jku_allowlist=["http://ehr.hospital.example/jwks"])],
                 public_base_url=BASE)
    Settings(profile="dev", issuers=[Issuer(iss=ISS, jwks_url="http://localhost:9/jwks")])


@pytest.mark.parametrize("path", ["/cds-services/no-such-service", "/cds-services/no-such-service/feedback"])
def test_unknown_service_ids_cannot_be_probed_without_a_token(prod, client, path):
    assert prod.post(path, json=rq.order_select()).status_code == 401
    assert prod.post(path, json=rq.order_select(), headers=H(_token(BASE + path))).status_code == 404
    assert client.post(path, json=rq.order_select()).status_code == 404  # dev mode: no authentication at all
