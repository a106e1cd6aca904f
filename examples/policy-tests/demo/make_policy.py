"""Writes policy.json: the demo's filter configuration (tests/e2e/demo_config.py) over the test
keys in keys/, so demo.test.yaml tests the very policy `make demo` runs.

The keys are test keys made for this example; nothing but these tests trusts them.
Run: .venv/bin/python examples/policy-tests/demo/make_policy.py [--new-keys]
tests/e2e/test_policy_tests.py fails when policy.json and demo_config.py drift apart.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "tests" / "e2e"))

import demo_config  # noqa: E402
import keys  # noqa: E402

KEYS = HERE / "keys"
POLICY = HERE / "policy.json"


def policy() -> dict:
    return demo_config.filter_config(keys.KeySet.load(str(KEYS)))


def main() -> None:
    if "--new-keys" in sys.argv or not KEYS.exists():
        keys.KeySet.generate().save(str(KEYS))
        (KEYS / "jwks.json").unlink()
    with open(POLICY, "w") as f:
        json.dump(policy(), f, indent=2)
        f.write("\n")
    print(f"wrote {POLICY}")


if __name__ == "__main__":
    main()
