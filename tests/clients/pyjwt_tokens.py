"""Independent token minting with PyJWT (and `cryptography` keys), for the verifier-agreement test.

Usage: python3 pyjwt_tokens.py JWKS_OUT ISSUER AUDIENCE TENANT
Writes the public JWKS to JWKS_OUT and prints a JSON list of {"name", "token", "accept"} cases: tokens
PyJWT produces the standard way, and tokens that a correct verifier must refuse.
"""

import base64
import hashlib
import hmac
import json
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

jwks_out, iss, aud, tenant = sys.argv[1:5]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
eckey = ec.generate_private_key(ec.SECP256R1())

public_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
public_jwk.update({"kid": "py-1", "alg": "RS256", "use": "sig"})
small_jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(small.public_key()))
small_jwk.update({"kid": "py-small", "use": "sig"})
with open(jwks_out, "w") as f:
    json.dump({"keys": [public_jwk, small_jwk]}, f)

now = int(time.time())
base = {"iss": iss, "sub": "py-user", "aud": aud, "iat": now, "nbf": now, "exp": now + 300,
        "tenant_id": tenant, "scope": "models:read"}


def claims(**edits):
    c = dict(base)
    for k, v in edits.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256(c, k=key, kid="py-1", headers=None, alg="RS256"):
    h = {"kid": kid}
    h.update(headers or {})
    return jwt.encode(c, k, algorithm=alg, headers=h)


public_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
hs_input = b64(json.dumps({"alg": "HS256", "kid": "py-1"}).encode()) + "." + b64(json.dumps(base).encode())
hs_confused = hs_input + "." + b64(hmac.new(public_pem, hs_input.encode(), hashlib.sha256).digest())
good = rs256(base)
head, payload, sig = good.split(".")
tampered_payload = b64(json.dumps(claims(tenant_id="globex")).encode())

cases = [
    ("valid RS256", good, True),
    ("valid RS256, aud as a list", rs256(claims(aud=["other-api", aud])), True),
    ("valid RS256 with typ at+jwt", rs256(base, headers={"typ": "at+jwt"}), True),
    ("expired", rs256(claims(iat=now - 900, nbf=now - 900, exp=now - 600)), False),
    ("not yet valid", rs256(claims(nbf=now + 600, exp=now + 900)), False),
    ("exp missing", rs256(claims(exp=None)), False),
    ("wrong issuer", rs256(claims(iss=iss + "/")), False),
    ("wrong audience", rs256(claims(aud="other-api")), False),
    ("signed by another key", rs256(base, k=other), False),
    ("signed by a 1024-bit key published in the JWKS", rs256(base, k=small, kid="py-small"), False),
    ("alg none", jwt.encode(base, None, algorithm="none", headers={"kid": "py-1"}), False),
    ("PS256 with the right key", rs256(base, alg="PS256"), False),
    ("RS384 with the right key", rs256(base, alg="RS384"), False),
    ("ES256 (not allowed for this issuer)", jwt.encode(base, eckey, algorithm="ES256", headers={"kid": "py-1"}), False),
    ("HS256 keyed with the public PEM", hs_confused, False),
    ("payload swapped, signature kept", f"{head}.{tampered_payload}.{sig}", False),
    ("kid missing", jwt.encode(base, key, algorithm="RS256"), False),
    ("tenant claim missing", rs256(claims(tenant_id=None)), False),
]
print(json.dumps([{"name": n, "token": t, "accept": a} for n, t, a in cases]))
