"""Rewrite the ``run.json`` of evaluation folders made with run keys of version 1, so they resume under version 2.

Version 1 left fields added after the first release out of a run's key while they held the value they had before
they existed (``LATER_V1``), and a run's ``spec`` written then lacks fields added later still. Version 2 keys every
field that changes play (``duomem.eval.spec.KEY_VERSION``). For each folder this script rebuilds the spec as it was
played (missing fields take their ``LATER_V1`` value), checks that version 1 gives the fingerprint the folder
recorded (else it leaves the folder alone and says so) and writes the version 2 key. Folders already at version 2
are left as they are.

Usage: python scripts/migrate_run_keys.py FOLDER [FOLDER ...]   (every run.json below each FOLDER)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

from duomem.eval.spec import KEY_VERSION, RolloutSpec
from duomem.jsonl import atomic_write_json

LATER_V1 = {"retrieval": "similarity", "fewshot": "train", "memory_format": None, "action_selection": "free",
            "score_norm": "sum", "note": False, "batch": 1, "batch_tokens": 393216, "request_timeout": 120.0,
            "request_retries": 5, "request_concurrency": 8}
"""Fields added after the first release and the value each had before it existed (scoring summed)."""


def v1_key(spec: RolloutSpec) -> dict:
    """Version 1's key: version 2's without its version, less the later fields at their ``LATER_V1`` values."""
    return {k: v for k, v in spec.key_fields().items()
            if k != "key_version" and not (k in LATER_V1 and v == LATER_V1[k])}


def migrate(path: Path) -> str:
    old = json.loads(path.read_text())
    if old.get("key", {}).get("key_version") == KEY_VERSION:
        return "current"
    spec = RolloutSpec.model_validate({**{k: v for k, v in LATER_V1.items() if k in RolloutSpec.model_fields},
                                       **old["spec"]})
    v1 = hashlib.sha256(json.dumps(v1_key(spec), sort_keys=True).encode()).hexdigest()[:16]
    if v1 != old.get("fingerprint"):
        return f"left alone: its recorded fingerprint {old.get('fingerprint')} is not version 1's {v1}"
    atomic_write_json(path, {**old, "spec": spec.model_dump(), "key": spec.key_fields(),
                             "fingerprint": spec.fingerprint()})
    return "migrated"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path)
    args = ap.parse_args()
    failed = 0
    for folder in args.folders:
        for path in sorted(folder.rglob("run.json")):
            if "fingerprint" not in json.loads(path.read_text()):
                continue  # not an evaluation folder
            outcome = migrate(path)
            failed += outcome.startswith("left alone")
            print(f"{path}: {outcome}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
