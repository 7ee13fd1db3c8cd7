#!/usr/bin/env python3
"""Writes 16 bodies of 1,000 analytics events each, the same events twice: with UUID user ids
and with string ids (half product ids like e-mail addresses, half anonymous ids), 10,000 users,
for the ingest comparison of issue 18 (bench/http_load/analytics_events.lua)."""
import json, random, sys, uuid

out = sys.argv[1]
types = ["page_view", "click", "signup", "login", "purchase", "search", "share", "upload", "download", "logout"]
for kind in ("uuid", "strings"):
    rng = random.Random(7)
    with open(f"{out}/.analytics_{kind}.txt", "w") as f:
        for _ in range(16):
            events = []
            for _ in range(1000):
                u = rng.randrange(10_000)
                if kind == "uuid":
                    user = str(uuid.UUID(int=0xB0B0_0000_0000_7000_8000_0000_0000_0000 | u))
                elif u % 2 == 0:
                    user = f"user-{u}@customer.example.com"
                else:
                    user = f"anon_{u:016x}_web"
                events.append({"event_type": rng.choice(types), "user_id": user,
                               "feature": f"feature_{rng.randrange(20):02}",
                               "metadata": {"plan": "pro", "n": rng.randrange(100)}})
            f.write(json.dumps({"events": events}) + "\n")
