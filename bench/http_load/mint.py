#!/usr/bin/env python3
"""Mints HS256 tokens (the claims of API.md) for "tenant_id user_id" lines on stdin, writing
"token tenant_id - -" lines. Used for the 10,000-actor run, whose tenants are bulk-inserted."""

import base64
import hashlib
import hmac
import json
import sys
import time


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


secret = sys.argv[1].encode()
now = int(time.time())
header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
for line in sys.stdin:
    parts = line.split()
    if len(parts) != 2:
        continue
    tenant, user = parts
    claims = {"sub": user, "tenant_id": tenant, "role": "admin", "iat": now, "exp": now + 7200,
              "iss": "tenantry"}
    body = header + "." + b64(json.dumps(claims).encode())
    sig = b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    print(f"{body}.{sig} {tenant} - -")
