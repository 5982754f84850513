"""Summaries of episode records: the JSON schema later stages read, and a Markdown table."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from datetime import UTC, datetime

from duomem.envs.base import TASK_TYPES
from duomem.eval.records import EpisodeRecord
from duomem.eval.stats import paired_bootstrap, wilson


def host() -> dict[str, object]:
    """The machine a summary was made on: architecture, CPU model (Linux: ``/proc/cpuinfo``), CPUs, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"machine": platform.machine(), "python": platform.python_version(), "processor": cpu,
            "cpus": os.cpu_count()}


def _mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else 0.0


def _throughput(records: Sequence[EpisodeRecord]) -> float | None:
    """Episodes per hour of elapsed time over the run (parallel workers and batches included); None if the
    records do not say when they ended, or the run was resumed across a long pause (> 1 hour)."""
    timed = sorted((r.ended_at - r.wall_s, r.ended_at) for r in records if r.ended_at > 0)
    if len(timed) < 2:
        return None
    elapsed, start, end = 0.0, timed[0][0], timed[0][1]
    for s, e in timed[1:]:  # merge busy intervals; gaps (a run stopped and resumed later) do not count
        if s > end + 3600:
            elapsed += end - start
            start, end = s, e
        else:
            end = max(end, e)
    elapsed += end - start
    return len(timed) / elapsed * 3600 if elapsed > 0 else None


def game_key(record: EpisodeRecord) -> str:
    """An episode's key in paired comparisons: its game id (``game_id#sample`` for samples after the first)."""
    return record.game_id if record.sample == 0 else f"{record.game_id}#{record.sample}"


def outcomes(records: Sequence[EpisodeRecord]) -> dict[str, bool]:
    """Won or lost per episode, keyed by game id (``game_id#sample`` for samples after the first): what paired
    comparisons between rows read."""
    return {game_key(r): r.won for r in records}


def scores(records: Sequence[EpisodeRecord]) -> dict[str, float]:
    """Each scored episode's score (0-100; a failed task's negative score as 0), keyed as :func:`outcomes`: what
    paired score comparisons read."""
    return {game_key(r): max(0.0, r.score) for r in records if r.score is not None}


def rate(won: int, n: int) -> dict:
    """``{"n", "n_won", "success_rate", "success_ci95"}``: a success rate with its 95% Wilson interval."""
    return {"n": n, "n_won": won, "success_rate": won / n if n else 0.0, "success_ci95": list(wilson(won, n))}


def task_types(records: Sequence[EpisodeRecord]) -> list[str]:
    """The task types of ``records``: ALFWorld's in :data:`TASK_TYPES` order, then others (ScienceWorld's task
    names) sorted."""
    seen = {r.task_type for r in records}
    return [t for t in TASK_TYPES if t in seen] + sorted(seen - set(TASK_TYPES))


def score(records: Sequence[EpisodeRecord]) -> dict:
    """``{"mean_score", "mean_score_ci95"}`` over the records that have a score (ScienceWorld's 0-100): a failed
    episode (a negative score) counts as 0 and the interval is a 95% percentile bootstrap over episodes (10,000
    resamples, seed 0: the same records give the same interval)."""
    scores = [max(0.0, r.score) for r in records if r.score is not None]
    if not scores:
        return {"mean_score": None, "mean_score_ci95": None}
    ci = paired_bootstrap([scores], lambda means: means[0])
    return {"mean_score": _mean(scores), "mean_score_ci95": list(ci) if ci else None}


def per_topic(records: Sequence[EpisodeRecord]) -> dict:
    """ScienceWorld's records by topic (``Matter`` ... ``Biology: genetics``, in topic order): each topic's
    :func:`rate` and :func:`score`. Records of other games are left out."""
    from duomem.envs.scienceworld_data import TASKS, TOPICS, topic_of

    by_topic: dict[int, list[EpisodeRecord]] = {}
    for r in records:
        if r.score is not None and r.task_type in TASKS:
            by_topic.setdefault(topic_of(r.task_type), []).append(r)
    return {TOPICS[k]: {**rate(sum(r.won for r in rs), len(rs)), **score(rs)}
            for k, rs in sorted(by_topic.items())}


def summarize(records: Sequence[EpisodeRecord], name: str, policy: str, model: str | None, split: str,
              extra: dict | None = None) -> dict:
    """``{"name", "policy", "model", "split", "n_episodes", "success_rate", "success_ci95", "per_type",
    "mean_steps", "invalid_action_rate", "wall_s_per_episode", "peak_rss_mb"}`` plus details; ``per_type`` gives
    each task type's :func:`rate`, ``outcomes`` each game's result. Where records have a score (ScienceWorld):
    ``mean_score`` and ``mean_score_ci95`` (see :func:`score`, also in each ``per_type`` entry), ``per_topic`` and
    ``scores`` (each game's)."""
    n = len(records)
    per_type = {}
    for t in task_types(records):
        rs = [r for r in records if r.task_type == t]
        per_type[t] = rate(sum(r.won for r in rs), len(rs))
        if any(r.score is not None for r in rs):
            per_type[t].update(score(rs))
    actions = sum(r.steps - r.thinks for r in records)
    llm_s = sum(r.llm_s for r in records)
    completion = sum(r.completion_tokens for r in records)
    wall = sum(r.wall_s for r in records)
    summary = {
        "name": name,
        "policy": policy,
        "model": model,
        "split": split,
        "n_episodes": n,
        "success_rate": _mean([float(r.won) for r in records]),
        "success_ci95": list(wilson(sum(r.won for r in records), n)),
        "per_type": per_type,
        "mean_steps": _mean([r.steps for r in records]),
        "invalid_action_rate": sum(r.invalid_actions for r in records) / actions if actions else 0.0,
        "wall_s_per_episode": wall / n if n else 0.0,
        "peak_rss_mb": max((r.peak_rss_mb for r in records), default=0.0),
        "n_won": sum(r.won for r in records),
        "mean_steps_won": _mean([r.steps for r in records if r.won]),
        "mean_env_steps": _mean([r.env_steps for r in records]),
        "think_rate": sum(r.thinks for r in records) / max(1, sum(r.steps for r in records)),
        "errors": sum(r.error is not None for r in records),
        "tokens": {
            "prompt": sum(r.prompt_tokens for r in records),
            "prompt_cached": sum(r.cached_prompt_tokens for r in records),
            "completion": completion,
            "completion_tokens_per_llm_s": completion / llm_s if llm_s else 0.0,
        },
        "time_split": {"llm_s": llm_s, "env_s": sum(r.env_s for r in records), "wall_s": wall},
        "episodes_per_hour": _throughput(records),
        "host": host(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "outcomes": outcomes(records),
    }
    if any(r.score is not None for r in records):
        summary.update(score(records))
        summary["per_topic"] = per_topic(records)
        summary["scores"] = scores(records)
    summary.update(extra or {})
    speed = summary.get("speed") or {}
    if speed.get("prompt_tokens_per_s") and speed.get("decode_tokens_per_s") and llm_s:
        tokens = summary["tokens"]
        predicted = ((tokens["prompt"] - tokens["prompt_cached"]) / speed["prompt_tokens_per_s"]
                     + completion / speed["decode_tokens_per_s"])
        summary["model_time_vs_raw"] = {"predicted_llm_s": predicted, "ratio": llm_s / predicted if predicted else None}
    return summary


def pct(x: float | None) -> str:
    """A rate as a percentage with one decimal ("-" for none)."""
    return "-" if x is None else f"{100 * x:.1f}"


def interval(entry: dict) -> tuple[float, float]:
    """The 95% Wilson interval of a summary or a ``per_type`` entry (computed from its counts where an older
    summary does not store it)."""
    if "success_ci95" in entry:
        low, high = entry["success_ci95"]
        return low, high
    n = entry.get("n", entry.get("n_episodes", 0))
    return wilson(entry.get("n_won", round(entry["success_rate"] * n)), n)


def pct_ci(entry: dict | None) -> str:
    """``23.1 [16.8, 30.9]``: a success rate and its 95% interval, in percent ("-" for none)."""
    if entry is None:
        return "-"
    low, high = interval(entry)
    return f"{pct(entry['success_rate'])} [{pct(low)}, {pct(high)}]"


def score_ci(entry: dict) -> str:
    """``87.5 [75.0, 100.0]``: a mean score and its interval ("-" for none)."""
    if entry.get("mean_score") is None:
        return "-"
    ci = entry.get("mean_score_ci95")
    return f"{entry['mean_score']:.1f}" + (f" [{ci[0]:.1f}, {ci[1]:.1f}]" if ci else "")


def summary_markdown(summary: dict) -> str:
    """The summary as a Markdown table (overall and per task type, success rates with 95% Wilson intervals)."""
    types = [t for t in TASK_TYPES if t in summary["per_type"]]
    others = [t for t in summary["per_type"] if t not in TASK_TYPES]
    if others:  # ScienceWorld's 30 task names: a table of their own below, not 30 columns
        types = []
    head = "| " + " | ".join(["run", "n", "success % [95% CI]", *(f"{t} (n)" for t in types), "mean steps",
                              "invalid %", "s/episode", "peak RSS MB"]) + " |"
    sep = "|" + "---|" * (7 + len(types))
    cells = [f"{pct_ci(summary['per_type'][t])} ({summary['per_type'][t]['n']})" for t in types]
    row = "| " + " | ".join([summary["name"], str(summary["n_episodes"]), pct_ci(summary), *cells,
                             f"{summary['mean_steps']:.1f}", pct(summary["invalid_action_rate"]),
                             f"{summary['wall_s_per_episode']:.1f}", f"{summary['peak_rss_mb']:.0f}"]) + " |"
    lines = [f"# {summary['name']}", "",
             f"policy `{summary['policy']}`, model `{summary['model']}`, split `{summary['split']}`, "
             f"{summary['n_episodes']} episodes", "", head, sep, row]
    if summary.get("mean_score") is not None:
        lines += ["", f"Mean score (0-100, a failed task counts 0): {score_ci(summary)} (95% bootstrap interval)."]
    if others:
        lines += ["", "| task type | n | success % [95% CI] | mean score [95% CI] |", "|---|---|---|---|"]
        lines += [f"| {t} | {e['n']} | {pct_ci(e)} | {score_ci(e)} |"
                  for t, e in summary["per_type"].items() if t in others]
    if summary.get("per_topic"):
        lines += ["", "| topic | n | success % [95% CI] | mean score [95% CI] |", "|---|---|---|---|"]
        lines += [f"| {t} | {e['n']} | {pct_ci(e)} | {score_ci(e)} |" for t, e in summary["per_topic"].items()]
    speed = summary.get("speed")
    if speed:
        prefill = (f"prefill {speed['prompt_tokens_per_s']:.1f} tokens/s at {speed['prompt_tokens']} tokens"
                   if "prompt_tokens" in speed else f"prompt {speed['prompt_tokens_per_s']:.1f} tokens/s")
        lines += ["", f"Raw llama.cpp (probe at the run's start): decode {speed['decode_tokens_per_s']:.1f} tokens/s, "
                      f"{prefill}; in the agent loop: "
                      f"{summary['tokens']['completion_tokens_per_llm_s']:.1f} completion tokens per second of "
                      f"model time; model time is {pct(summary['time_split']['llm_s'] / max(1e-9, summary['time_split']['wall_s']))}% "
                      "of wall time."]
        ratio = (summary.get("model_time_vs_raw") or {}).get("ratio")
        if ratio:
            lines[-1] += (f" Model time is {ratio:.2f}x what the probe's rates predict for the uncached prompt and "
                          "completion tokens.")
    return "\n".join(lines) + "\n"
