"""Sum the JSON lines that AGROML_FAULT_LOG collected into the figures docs/RELIABILITY.md shows.

AGROML_FAULT_LOG=/tmp/f.jsonl pytest -n 0 tests/reliability/test_faults.py tests/reliability/test_kills.py \
    tests/reliability/test_api_kills.py
python tests/reliability/figures.py /tmp/f.jsonl
"""

from __future__ import annotations

import json
import sys
from collections import Counter


def main(paths: list[str]) -> None:
    entries = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            entries.extend(json.loads(line) for line in fh if line.strip())
    faults = [e for e in entries if e["test"] in ("faults", "unreachable")]
    kills = [e for e in entries if e["test"] == "kill"]
    if faults:
        outcomes = Counter(e["outcome"] for e in faults)
        injected: Counter[str] = Counter()
        for e in faults:
            injected.update(e.get("faults", {}))
            if e["test"] == "unreachable":
                injected[e["plan"]] += 1
        changes = Counter(e.get("change", "before") for e in faults if e["test"] == "faults")
        print(f"fault runs: {len(faults)}; outcomes: {dict(outcomes)}")
        print("by command:", dict(Counter(e["command"] for e in faults)))
        print("by plan:", dict(Counter(e["plan"] for e in faults)))
        print("faults injected:", dict(sorted(injected.items())), "total", sum(injected.values()))
        print("retry lines:", sum(e.get("retries", 0) for e in faults), "; data changed mid-read:", dict(changes))
        print(f"longest run: {max(e['wall_s'] for e in faults):.1f} s")
    if kills:
        print(f"kills: {len(kills)}; killed mid-run: {sum(e['killed'] for e in kills)}; consistent after rerun: "
              f"{sum(bool(e.get('consistent')) for e in kills)}")  # fmt: skip
        print("by command:", dict(Counter(e["command"] for e in kills)))
        for e in kills:
            print(
                f"  {e['command']}: seed {e['seed']}, kill at {e['at_s']} s of {e['clean_s']} s, killed={e['killed']}"
            )
    api_kills = [e for e in entries if e["test"] == "api_kill"]
    if api_kills:
        recovered = sum(bool(e.get("consistent")) for e in entries if e["test"] == "api_recovery")
        print(f"API kills: {len(api_kills)}; killed mid-run: {sum(e['killed'] for e in api_kills)}; "
              f"consistent, a new training accepted and finished: {recovered}")  # fmt: skip
        for e in api_kills:
            print(f"  {e['command']}: seed {e['seed']}, drawn {e['phase']} + {e['delay_s']} s, killed at {e['at']}")


if __name__ == "__main__":
    main(sys.argv[1:])
