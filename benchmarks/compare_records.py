"""Compare two runs' episode records game by game: same trajectories (commands, observations, outcome)?

    python benchmarks/compare_records.py RUN_A RUN_B [--json OUT]

RUN_* are folders holding ``episodes.jsonl`` (plain or packed, ``.xz`` or ``.gz``) or the files themselves. Timings are ignored. Prints how many
episodes are identical and, for the others, the first turn where they part, whether the model said the same
up to and at that turn (``same_outputs``) and how A's output became its command there (``a_match``: e.g.
``closest`` for the free-mode substitution that issue 13 removed); ``--json`` writes the same as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from duomem.jsonl import read_jsonl


def _records(path: Path) -> dict[tuple[str, int], dict]:
    rows = read_jsonl(path / "episodes.jsonl" if path.is_dir() else path)
    return {(r["game_id"], r.get("sample", 0)): r for r in rows}


def _turns(record: dict) -> list[tuple[str, str, str]]:
    return [(s["kind"], s["text"], s["observation"]) for s in record["trajectory"]["steps"]]


def compare(a: Path, b: Path) -> dict:
    ra, rb = _records(a), _records(b)
    shared = sorted(set(ra) & set(rb))
    differing = []
    for key in shared:
        ta, tb = _turns(ra[key]), _turns(rb[key])
        if ta != tb or ra[key]["won"] != rb[key]["won"]:
            turn = next((i for i, (x, y) in enumerate(zip(ta, tb, strict=False)) if x != y), min(len(ta), len(tb)))
            sa, sb = ra[key]["trajectory"]["steps"], rb[key]["trajectory"]["steps"]
            same = all(sa[i].get("raw") == sb[i].get("raw") for i in range(min(turn + 1, len(sa), len(sb))))
            differing.append({"game_id": key[0], "sample": key[1], "first_different_turn": turn,
                              "same_outputs": same, "a_match": sa[turn].get("match") if turn < len(sa) else None,
                              "a": ta[turn][1] if turn < len(ta) else None, "b": tb[turn][1] if turn < len(tb) else None,
                              "won": [ra[key]["won"], rb[key]["won"]]})
    return {"a": str(a), "b": str(b), "shared_episodes": len(shared), "only_a": len(set(ra) - set(rb)),
            "only_b": len(set(rb) - set(ra)), "identical": len(shared) - len(differing),
            "won": [sum(ra[k]["won"] for k in shared), sum(rb[k]["won"] for k in shared)],
            "differing_with_same_outputs": sum(d["same_outputs"] for d in differing), "differing": differing}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out = compare(args.a, args.b)
    print(f"{out['identical']}/{out['shared_episodes']} episodes identical (won {out['won'][0]} vs {out['won'][1]}); "
          f"only in A {out['only_a']}, only in B {out['only_b']}; of the others, {out['differing_with_same_outputs']} "
          "with the same model outputs up to where they part")
    for d in out["differing"][:20]:
        print(f"  {d['game_id']}#{d['sample']}: turn {d['first_different_turn']} ({d['a_match']}): "
              f"{d['a']!r} vs {d['b']!r}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
