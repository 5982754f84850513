"""On-device figures of a student (issue 15): raw llama.cpp speed at the context lengths the agent uses, and the
agent loop's model time against what that raw speed predicts for the same tokens.

Usage: python benchmarks/on_device.py RUN_DIR [RUN_DIR ...] --model smollm2-135m [--adapter A.gguf] --name NAME
Each RUN_DIR is a finished evaluation (episodes.jsonl + run.json) played with one thread per worker. Run it on quiet
cores: the raw probe takes the machine's cores while nothing else runs. Writes results/on-device-NAME.{json,md}.
"""

from __future__ import annotations

import argparse
import os
from itertools import pairwise
from pathlib import Path

from duomem.eval.runner import load_records
from duomem.eval.summary import host
from duomem.jsonl import atomic_write_json, atomic_write_text
from duomem.llm import load_chat_model

HERE = Path(__file__).resolve().parent
CONTEXTS = (250, 1000, 2000, 4000)


def raw_speed(model: str, adapter: str | None, threads: int) -> list[dict]:
    llm = load_chat_model(model, backend="llamacpp", adapter=adapter, threads=threads)
    llm.decode_speed(n_tokens=8, context=250)  # warm-up
    rows = [llm.decode_speed(n_tokens=64, context=c) for c in CONTEXTS]
    llm.close()
    return rows


def rate_at(rows: list[dict], key: str, context: float) -> float:
    """Linear interpolation of a rate between the measured context lengths."""
    points = sorted((r["prompt_tokens"], r[key]) for r in rows)
    if context <= points[0][0]:
        return points[0][1]
    for (c0, r0), (c1, r1) in pairwise(points):
        if context <= c1:
            return r0 + (r1 - r0) * (context - c0) / (c1 - c0)
    return points[-1][1]


def loop_figures(run: Path, speed: list[dict]) -> dict:
    records = load_records(run)
    turns = sum(r.steps for r in records)
    prompt = sum(r.prompt_tokens for r in records)
    uncached = prompt - sum(r.cached_prompt_tokens for r in records)
    completion = sum(r.completion_tokens for r in records)
    llm_s = sum(r.llm_s for r in records)
    context = prompt / turns
    prefill, decode = rate_at(speed, "prompt_tokens_per_s", context), rate_at(speed, "decode_tokens_per_s", context)
    predicted = uncached / prefill + completion / decode
    return {"run": str(run), "episodes": len(records), "turns": turns, "mean_context_tokens": context,
            "uncached_prompt_tokens": uncached, "completion_tokens": completion,
            "s_per_episode": sum(r.wall_s for r in records) / len(records),
            "llm_s_per_episode": llm_s / len(records), "env_s_per_episode": sum(r.env_s for r in records) / len(records),
            "predicted_llm_s_per_episode": predicted / len(records), "llm_vs_raw": llm_s / predicted,
            "env_share_of_wall": sum(r.env_s for r in records) / sum(r.wall_s for r in records),
            "peak_rss_mb": max(r.peak_rss_mb for r in records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--name", required=True)
    args = ap.parse_args()
    speed = {t: raw_speed(args.model, args.adapter, t) for t in (1, 2)}
    loops = [loop_figures(run, speed[1]) for run in args.runs]
    from duomem.llm.registry import resolve

    size = resolve(args.model).path.stat().st_size + (Path(args.adapter).stat().st_size if args.adapter else 0)
    result = {"model": args.model, "adapter": args.adapter, "model_plus_adapter_bytes": size,
              "host": host(),
              "raw_speed": {str(t): rows for t, rows in speed.items()}, "loops": loops,
              "command": "python benchmarks/on_device.py " + " ".join(map(str, args.runs)) + f" --model {args.model}"
                         + (f" --adapter {args.adapter}" if args.adapter else "") + f" --name {args.name}"}
    lines = [f"# On-device figures: {args.name}", "", f"`{result['command']}`", "",
             f"Model + adapter: {size / 1e6:.1f} MB. {os.cpu_count()} CPU cores.", "",
             "| threads | context tokens | prefill tokens/s | decode tokens/s |", "|---|---|---|---|"]
    for t, rows in speed.items():
        lines += [f"| {t} | {r['prompt_tokens']} | {r['prompt_tokens_per_s']:.0f} | {r['decode_tokens_per_s']:.1f} |"
                  for r in rows]
    lines += ["", "| run | episodes | s/episode | model s/episode | predicted by raw speed (1 thread) | loop / raw | "
                  "env share of wall | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for lp in loops:
        lines.append(f"| {Path(lp['run']).name} | {lp['episodes']} | {lp['s_per_episode']:.1f} | "
                     f"{lp['llm_s_per_episode']:.1f} | {lp['predicted_llm_s_per_episode']:.1f} | "
                     f"{lp['llm_vs_raw']:.2f}x | {100 * lp['env_share_of_wall']:.0f}% | {lp['peak_rss_mb']:.0f} |")
    out = HERE / "results" / f"on-device-{args.name}"  # names hold dots (qwen2.5-...): no with_suffix
    atomic_write_json(out.with_name(out.name + ".json"), result)
    atomic_write_text(out.with_name(out.name + ".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
