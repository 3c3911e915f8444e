"""Compare the rows of two quality_diversity.json files field by field (the refactor check in README.md).

    python experiments/guidance_zoo/compare.py BASE.json BRANCH.json
"""

import json
import sys

KEYS = ("scale", "fid", "accuracy", "precision", "recall", "num_samples")


def main(base_path: str, new_path: str) -> bool:
    base = json.load(open(base_path))["rows"]
    new = json.load(open(new_path))["rows"]
    if len(base) != len(new):
        raise SystemExit(f"{len(base)} rows vs {len(new)} rows")
    same = True
    for old_row, new_row in zip(base, new):
        equal = all(old_row[key] == new_row[key] for key in KEYS)
        same &= equal
        print("==" if equal else "!=", {key: old_row[key] for key in KEYS},
              "" if equal else {key: new_row[key] for key in KEYS})
    print("IDENTICAL" if same else "DIFFERENT")
    return same


if __name__ == "__main__":
    sys.exit(0 if main(*sys.argv[1:3]) else 1)
