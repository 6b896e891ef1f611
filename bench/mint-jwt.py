#!/usr/bin/env python3
"""For bench/auth-callgrind.sh: writes into DIR an HS256 secret, a P-256 public key and one
token (iss hs-issuer / es-issuer, sub bench, valid a day) for each. Usage: mint-jwt.py DIR"""
import base64, hmac, hashlib, json, os, sys, time
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives import hashes, serialization

out = sys.argv[1]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def signing_input(alg, iss):
    h = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    p = b64(json.dumps({"iss": iss, "sub": "bench", "exp": int(time.time()) + 86400}).encode())
    return f"{h}.{p}"
secret = os.urandom(32)
open(f"{out}/hs.secret", "wb").write(secret)
si = signing_input("HS256", "hs-issuer")
open(f"{out}/hs.token", "w").write(si + "." + b64(hmac.new(secret, si.encode(), hashlib.sha256).digest()))
key = ec.generate_private_key(ec.SECP256R1())
open(f"{out}/es.pub", "wb").write(key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
si = signing_input("ES256", "es-issuer")
r, s = utils.decode_dss_signature(key.sign(si.encode(), ec.ECDSA(hashes.SHA256())))
open(f"{out}/es.token", "w").write(si + "." + b64(r.to_bytes(32, "big") + s.to_bytes(32, "big")))
