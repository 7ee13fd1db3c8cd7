"""Verifies real webhook deliveries with the Standard Webhooks reference library (PyPI
`standardwebhooks`), as a receiver written in Python would.

Usage: verify_webhooks.py DELIVERIES.json
The file holds a list of {"secrets": [...], "headers": {name: value}, "body": "..."}; each
delivery must verify under every one of its secrets, and must fail once its body is altered.
Prints one line per delivery and exits non-zero on the first failure.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main(path: str) -> int:
    with open(path, encoding="utf-8") as f:
        deliveries = json.load(f)
    if not deliveries:
        print("no deliveries to verify", file=sys.stderr)
        return 1
    for i, delivery in enumerate(deliveries):
        headers = delivery["headers"]
        body = delivery["body"].encode("utf-8")
        for secret in delivery["secrets"]:
            payload = Webhook(secret).verify(body, headers)
            if not isinstance(payload, dict) or "type" not in payload:
                print(f"delivery {i}: unexpected payload {payload!r}", file=sys.stderr)
                return 1
            try:
                Webhook(secret).verify(body + b" ", headers)
            except WebhookVerificationError:
                pass
            else:
                print(f"delivery {i}: an altered body verified", file=sys.stderr)
                return 1
        print(f"delivery {i} ({headers['webhook-id']}): verified with {len(delivery['secrets'])} secret(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
