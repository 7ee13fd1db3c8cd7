#!/usr/bin/env python3
"""Provisions the benchmark's tenants through the real API (POST /tenants, POST /projects,
POST /tasks) and writes one line per tenant: token tenant_id project_id task_id.

Only the standard library, so the bench runs on a fresh machine."""

import argparse
import json
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor


def call(base, method, path, token, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def one(base, operator, prefix, i):
    slug = f"{prefix}-{i}"
    created = call(base, "POST", "/tenants", operator, {
        "name": f"Bench {i}", "slug": slug, "plan": "pro",
        "admin_email": f"admin@{slug}.example.com", "admin_password": "bench-password-123",
    })
    token = created["credentials"]["token"]
    tenant = created["tenant"]["id"]
    project = call(base, "POST", "/projects", token, {"name": "Bench project"})["id"]
    task = call(base, "POST", "/tasks", token, {"project_id": project, "title": "Bench task"})["id"]
    return f"{token} {tenant} {project} {task}"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--base", required=True)
    p.add_argument("--operator", required=True)
    p.add_argument("--tenants", type=int, default=1000)
    p.add_argument("--prefix", default="bench")
    p.add_argument("--out", required=True)
    p.add_argument("--parallel", type=int, default=4)
    a = p.parse_args()
    started = time.time()
    lines = []
    with ThreadPoolExecutor(a.parallel) as pool:
        futures = [pool.submit(one, a.base, a.operator, a.prefix, i) for i in range(a.tenants)]
        for n, f in enumerate(futures, 1):
            lines.append(f.result())
            if n % 100 == 0 or n == a.tenants:
                print(f"  provisioned {n}/{a.tenants} tenants ({time.time() - started:.0f}s)",
                      file=sys.stderr, flush=True)
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
