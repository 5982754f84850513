"""The DuoMem report: the ablation table in the paper's layout, artefact sizes, the k sweep, and two plots."""

from __future__ import annotations

from pathlib import Path

from duomem.envs.base import TASK_TYPES
from duomem.jsonl import atomic_write_json, atomic_write_text

PAPER = {
    "source": "DuoMem paper (arXiv 2606.29961), ALFWorld, Qwen3-4B student, 72B teacher",
    "success_rate": {"nomem": 0.043, "own_memory": 0.55, "teacher_memory": 0.564, "lora_own_memory": 0.721,
                     "duomem": 0.779, "teacher": 0.871},
}
LABELS = {
    "nomem": "no memory",
    "own_memory": "own memory (MemP baseline)",
    "teacher_memory": "teacher memory (context-space)",
    "lora": "LoRA only",
    "lora_own_memory": "LoRA + own memory (parameter-space)",
    "duomem": "LoRA + teacher memory (DuoMem)",
    "teacher": "teacher",
}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def derived(summaries: dict[str, dict]) -> dict:
    """Gap closed by DuoMem and each configuration's speed-up against the teacher.

    The speed-up compares throughput (episodes per hour of elapsed time, which counts parallel workers and batched
    episodes fairly) where both runs report it, else seconds per episode."""
    out: dict = {"speedup_vs_teacher": {}, "speedup_basis": {}, "gap_closed": None}
    teacher = summaries.get("teacher")
    if teacher:
        for name, s in summaries.items():
            if s.get("episodes_per_hour") and teacher.get("episodes_per_hour"):
                out["speedup_vs_teacher"][name] = s["episodes_per_hour"] / teacher["episodes_per_hour"]
                out["speedup_basis"][name] = "episodes per hour"
            elif s["wall_s_per_episode"] > 0 and teacher["wall_s_per_episode"] > 0:
                out["speedup_vs_teacher"][name] = teacher["wall_s_per_episode"] / s["wall_s_per_episode"]
                out["speedup_basis"][name] = "seconds per episode"
    base, duo = summaries.get("nomem"), summaries.get("duomem")
    whole = all(x is not None and x.get("complete", True) for x in (base, duo, teacher))
    if whole and base and duo and teacher and teacher["success_rate"] != base["success_rate"]:
        out["gap_closed"] = (duo["success_rate"] - base["success_rate"]) / (teacher["success_rate"]
                                                                          - base["success_rate"])
    return out


def report_markdown(report: dict) -> str:
    configs: dict[str, dict] = report["configs"]
    d = report["derived"]
    types = [t for t in TASK_TYPES if any(t in s["per_type"] for s in configs.values())]
    partial = [n for n, s in configs.items() if not s.get("complete", True)]
    missing = [n for n in report.get("planned", configs) if n not in configs]
    title = "partial report" if partial or missing else "report"
    lines = [f"# DuoMem {title}: {report['name']}", "",
             f"Student `{report['student']}`, teacher `{report['teacher']}`; evaluated on "
             f"{report['eval']['n_games']} games of `{report['eval']['split']}` (max {report['eval']['max_steps']} "
             f"steps, backend {report['eval']['backend']}); memories retrieved top-{report['chosen_k']}.", ""]
    head = ["configuration", "success %", *types, "mean steps", "invalid %", "s/episode", "episodes/h",
            "speed-up vs teacher",
            "peak RSS MB", "paper %"]
    if partial or missing:
        lines += ["**Not finished yet.** " + "; ".join(
            [f"{LABELS.get(n, n)}: {configs[n]['n_episodes']} of {configs[n]['n_planned']} games so far"
             for n in partial] + [f"{LABELS.get(n, n)}: not started" for n in missing])
            + ". Rerun the same `duomem run` command to continue; rows marked * cover the games finished so far.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in configs.items():
        mark = "*" if name in partial else ""
        row = [LABELS.get(name, name) + mark, _pct(s["success_rate"]),
               *[_pct(s["per_type"].get(t, {}).get("success_rate")) for t in types],
               f"{s['mean_steps']:.1f}", _pct(s["invalid_action_rate"]), f"{s['wall_s_per_episode']:.1f}",
               f"{s['episodes_per_hour']:.0f}" if s.get("episodes_per_hour") else "-",
               f"{d['speedup_vs_teacher'][name]:.2f}x" if name in d["speedup_vs_teacher"] else "-",
               f"{s['peak_rss_mb']:.0f}", _pct(PAPER["success_rate"].get(name.split('_window')[0]))]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Paper column: {PAPER['source']}; not our measurement.",
              "s/episode is each episode's own elapsed time (in a batched run, episodes share the batch's time); "
              "episodes/h is throughput over the whole run; the speed-up compares throughput where both runs have "
              "it.", ""]
    if d["gap_closed"] is not None:
        lines.append(f"Gap closed by DuoMem: (DuoMem - no memory) / (teacher - no memory) = "
                     f"{100 * d['gap_closed']:.1f}%.")
        lines.append("")
    art = report["artifacts"]
    lines += ["## Artefacts", "", "| artefact | size | details |", "|---|---|---|"]
    for key in ("own_bank", "teacher_bank"):
        b = art.get(key)
        if b:
            lines.append(f"| {key.replace('_', ' ')} | {b['size_bytes'] / 1e6:.2f} MB | {b['n_entries']} memories, "
                         f"writer {', '.join(b['writers']) or '-'}, retrieval {b['retrieval']} "
                         f"({b['embedder'] or 'bm25'}) |")
    for name, lo in art.get("loras", {}).items():
        lines.append(f"| LoRA for {LABELS.get(name, name)} | {lo['gguf_bytes'] / 1e6:.1f} MB GGUF "
                     f"({lo['peft_bytes'] / 1e6:.1f} MB peft) | rank {lo['rank']}, alpha {lo['alpha']}, "
                     f"{lo['trainable_params'] / 1e6:.2f}M trainable params, {lo['examples']} examples, "
                     f"{lo['tokens_per_epoch'] * lo['epochs']:.0f} train tokens, {lo['steps']} steps, "
                     f"{lo['wall_s']:.0f} s on {lo['hardware']}, loss {lo['loss_first']} -> {lo['loss_last']} |")
    tc = art.get("teacher_collect")
    if tc:
        lines += ["", f"Teacher trajectories: {tc['episodes']} episodes, {tc['won']} won, {tc['demonstrations']} "
                      f"distinct demonstrations ({report['teacher']})."]
    if report["k_sweep"]:
        lines += ["", f"## k sweep (teacher memory, `{report['tune']['split']}`, {report['tune']['n_games']} games)",
                  "", "| k | success % | n |", "|---|---|---|"]
        for k, s in report["k_sweep"].items():
            lines.append(f"| {k} | {_pct(s['success_rate'])} | {s['n_episodes']} |")
        lines.append(f"\nChosen k = {report['chosen_k']} (best success; a tie keeps the configured `memory.top_k` "
                     "when it is among the best, else the smaller k).")
    lines += ["", "![success per task type](success_per_type.png)", "",
              "![success against time](success_vs_time.png)", ""]
    return "\n".join(lines)


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    configs = report["configs"]
    names = list(configs)
    types = [t for t in TASK_TYPES if any(t in s["per_type"] for s in configs.values())]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(types) + 1)
    for i, name in enumerate(names):
        s = configs[name]
        vals = [s["per_type"].get(t, {}).get("success_rate", 0) * 100 for t in types] + [s["success_rate"] * 100]
        ax.bar(x + i * width, vals, width, label=LABELS.get(name, name))
    ax.set_xticks(x + width * (len(names) - 1) / 2, [*types, "all"])
    ax.set_ylabel("success %")
    ax.set_ylim(0, 100)
    ax.set_title(f"{report['name']}: success per task type ({report['eval']['split']}, {report['eval']['n_games']} games)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "success_per_type.png", dpi=120)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, s in configs.items():
        ax.scatter(s["wall_s_per_episode"], s["success_rate"] * 100)
        ax.annotate(LABELS.get(name, name), (s["wall_s_per_episode"], s["success_rate"] * 100), fontsize=7)
    ax.set_xlabel("wall seconds per episode")
    ax.set_ylabel("success %")
    ax.set_title("success against time")
    fig.tight_layout()
    fig.savefig(out / "success_vs_time.png", dpi=120)
    plt.close(fig)


def build_report(name: str, student: str, teacher: str, summaries: dict[str, dict], k_sweep: dict[int, dict],
                 chosen_k: int, artifacts: dict, eval_info: dict, tune_info: dict,
                 planned: list[str] | None = None) -> dict:
    planned = planned or list(summaries)
    return {
        "complete": all(n in summaries and summaries[n].get("complete", True) for n in planned),
        "planned": planned,
        "name": name,
        "student": student,
        "teacher": teacher,
        "eval": eval_info,
        "tune": tune_info,
        "configs": summaries,
        "k_sweep": {str(k): {"success_rate": s["success_rate"], "n_episodes": s["n_episodes"]}
                    for k, s in k_sweep.items()},
        "chosen_k": chosen_k,
        "artifacts": artifacts,
        "derived": derived(summaries),
        "paper": PAPER,
    }


def write_report(root: Path, cfg, summaries: dict[str, dict], k_sweep: dict[int, dict], chosen_k: int,
                 artifacts: dict, eval_games: int, planned: list[str] | None = None) -> Path:
    """Write ``report.json``, ``report.md`` and the plots into ``root``; returns the Markdown path."""
    teacher = "ALFWorld handcoded expert (oracle)" if cfg.teacher.policy == "expert" else cfg.teacher.model
    report = build_report(
        cfg.name, cfg.student.model, teacher, summaries, k_sweep, chosen_k, artifacts,
        eval_info={"split": cfg.data.eval_split, "n_games": eval_games, "max_steps": cfg.eval.max_steps,
                   "backend": cfg.eval.backend},
        tune_info={"split": cfg.data.tune_split,
                   "n_games": next(iter(k_sweep.values()))["n_episodes"] if k_sweep else 0},
        planned=planned,
    )
    root = Path(root)
    atomic_write_json(root / "report.json", report)
    atomic_write_text(root / "report.md", report_markdown(report))
    if summaries:
        plot(report, root)
    return root / "report.md"
