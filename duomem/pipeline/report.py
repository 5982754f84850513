"""The DuoMem report: the ablation table in the paper's layout with 95% intervals, paired comparisons of the rows
the method's claims rest on, costs, artefact sizes, the k sweep, and two plots.

A report is built from evaluation summaries (:func:`build_report`), either by the pipeline as it runs or from a
folder of published episode records (:func:`report_from_records`, ``duomem report``); both write the same files
(:func:`write_report_files`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from duomem.envs.base import TASK_TYPES
from duomem.errors import DataError
from duomem.eval.stats import compare, gap_closed, paired_bootstrap
from duomem.eval.summary import interval, pct, pct_ci, score_ci, summarize
from duomem.jsonl import atomic_write_json, atomic_write_text

PAPER = {
    "source": "DuoMem paper (arXiv 2606.29961), ALFWorld, Qwen3-4B student, 72B teacher",
    "success_rate": {"nomem": 0.043, "own_memory": 0.55, "teacher_memory": 0.564, "lora_own_memory": 0.721,
                     "duomem": 0.779, "teacher": 0.871},
}
ANCHORS_SCIENCEWORLD = {
    "source": "ETO (Song et al., 2024), ScienceWorld, Llama-2-7B fine-tuned on expert trajectories",
    "mean_score": {"seen": 67.4, "unseen": 53.0},
}
"""Published anchors for a ScienceWorld report (average score 0-100; no row of the DuoMem paper's is on it)."""
LABELS = {
    "nomem": "no memory",
    "own_memory": "own memory (MemP baseline)",
    "teacher_memory": "teacher memory (context-space)",
    "lora": "LoRA only",
    "lora_own_memory": "LoRA + own memory (parameter-space)",
    "duomem": "LoRA + teacher memory (DuoMem)",
    "teacher": "teacher",
}
PAIRS = (("teacher_memory", "nomem"), ("own_memory", "nomem"), ("duomem", "lora"), ("duomem", "teacher_memory"),
         ("lora_own_memory", "lora"))
"""The comparisons the method's claims rest on: (A, B) asks whether A wins more games than B."""
INPUTS = "report_inputs.json"
"""What a published records folder keeps besides the records: the report's settings and artefacts."""
INPUT_KEYS = ("name", "student", "teacher", "eval", "tune", "chosen_k", "artifacts", "planned")
BOOTSTRAP = {"resamples": 10_000, "seed": 0}
DPI = 120


def label(name: str) -> str:
    return LABELS.get(name, name)


def paper_rate(name: str) -> float | None:
    return PAPER["success_rate"].get(name.split("_window")[0])


def _complete(*summaries: dict | None) -> bool:
    return all(s is not None and s.get("complete", True) for s in summaries)


def _gap(summaries: dict[str, dict], name: str) -> dict | None:
    """(row - no memory) / (teacher - no memory), with a paired bootstrap interval over the games all three
    rows played (where their summaries carry per-game outcomes)."""
    row, base, top = summaries.get(name), summaries.get("nomem"), summaries.get("teacher")
    if not (row and base and top and _complete(row, base, top)) or top["success_rate"] == base["success_rate"]:
        return None
    value = (row["success_rate"] - base["success_rate"]) / (top["success_rate"] - base["success_rate"])
    outcomes = [s.get("outcomes") for s in (row, base, top)]
    ci = None
    if all(outcomes):
        games = sorted(set.intersection(*(set(o) for o in outcomes)))
        ci = paired_bootstrap([[float(o[g]) for g in games] for o in outcomes], gap_closed,
                              n_resamples=BOOTSTRAP["resamples"], seed=BOOTSTRAP["seed"])
    return {"value": value, "ci95": list(ci) if ci else None}


def derived(summaries: dict[str, dict]) -> dict:
    """Gap closed by DuoMem (and by every other student row) and each configuration's speed-up against the
    teacher.

    The speed-up compares throughput (episodes per hour of elapsed time, which counts parallel workers and batched
    episodes fairly) where both runs report it, else seconds per episode."""
    out: dict = {"speedup_vs_teacher": {}, "speedup_basis": {}, "gap_closed": None, "gap_closed_ci95": None,
                 "gap_closed_by": {}}
    teacher = summaries.get("teacher")
    if teacher:
        for name, s in summaries.items():
            if s.get("episodes_per_hour") and teacher.get("episodes_per_hour"):
                out["speedup_vs_teacher"][name] = s["episodes_per_hour"] / teacher["episodes_per_hour"]
                out["speedup_basis"][name] = "episodes per hour"
            elif s["wall_s_per_episode"] > 0 and teacher["wall_s_per_episode"] > 0:
                out["speedup_vs_teacher"][name] = teacher["wall_s_per_episode"] / s["wall_s_per_episode"]
                out["speedup_basis"][name] = "seconds per episode"
    for name in summaries:
        if name not in ("nomem", "teacher") and (gap := _gap(summaries, name)):
            out["gap_closed_by"][name] = gap
    if "duomem" in out["gap_closed_by"]:
        out["gap_closed"] = out["gap_closed_by"]["duomem"]["value"]
        out["gap_closed_ci95"] = out["gap_closed_by"]["duomem"]["ci95"]
    return out


def paired(summaries: dict[str, dict]) -> list[dict]:
    """Each pair of :data:`PAIRS` whose rows both carry per-game outcomes, compared on the games both played."""
    out = []
    for a, b in PAIRS:
        sa, sb = summaries.get(a), summaries.get(b)
        if sa and sb and sa.get("outcomes") and sb.get("outcomes"):
            pair = {"a": a, "b": b, **compare(sa["outcomes"], sb["outcomes"], BOOTSTRAP["seed"],
                                              BOOTSTRAP["resamples"])}
            if sa.get("scores") and sb.get("scores"):
                pair.update(score_difference(sa["scores"], sb["scores"]))
            out.append(pair)
    return out


def score_difference(a: dict[str, float], b: dict[str, float]) -> dict:
    """Mean score of A minus B (ScienceWorld's 0-100) on the games both played, with a paired bootstrap 95%
    interval over games."""
    games = sorted(set(a) & set(b))
    if not games:
        return {"score_difference": None, "score_difference_ci95": None}
    columns = [[a[g] for g in games], [b[g] for g in games]]
    ci = paired_bootstrap(columns, lambda means: means[0] - means[1], n_resamples=BOOTSTRAP["resamples"],
                          seed=BOOTSTRAP["seed"])
    diff = sum(columns[0]) / len(games) - sum(columns[1]) / len(games)
    return {"score_difference": diff, "score_difference_ci95": list(ci) if ci else None}


def _row(summary: dict) -> dict:
    """A report row: the summary without its per-game outcomes, every success rate with its 95% interval."""
    row = {k: v for k, v in summary.items() if k not in ("outcomes", "scores")}
    row["success_ci95"] = list(interval(summary))
    row["per_type"] = {t: {**e, "success_ci95": list(interval(e))} for t, e in summary["per_type"].items()}
    return row


def _signed(x: float) -> str:
    return f"{100 * x:+.1f}"


def p_value(p: float) -> str:
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def is_scienceworld(report: dict) -> bool:
    """Whether the report's rows have scores (ScienceWorld's 0-100): topics, not ALFWorld's task types."""
    return any(s.get("mean_score") is not None for s in report["configs"].values())


def topic_markdown(report: dict) -> list[str]:
    """ScienceWorld's tables: per row the success rate and the mean score (each with its 95% interval), then per
    topic the same for each row, with the published anchors beside them."""
    configs: dict[str, dict] = report["configs"]
    partial = [n for n, s in configs.items() if not s.get("complete", True)]
    anchors = ANCHORS_SCIENCEWORLD
    lines = ["| configuration | n | success % [95% CI] | mean score [95% CI] | mean steps |", "|---|---|---|---|---|"]
    for name, s in configs.items():
        lines.append(f"| {label(name)}{'*' if name in partial else ''} | {s['n_episodes']} | {pct_ci(s)} | "
                     f"{score_ci(s)} | {s['mean_steps']:.1f} |")
    lines += ["", f"Mean score: 0-100 per episode (a failed task counts 0), 95% bootstrap interval over episodes; "
                  f"success: score 100. Published anchor, not our measurement: {anchors['source']}, average score "
                  f"{anchors['mean_score']['seen']} on seen and {anchors['mean_score']['unseen']} on unseen "
                  "variations.", "", "Per topic: success % [95% CI] / mean score [95% CI].", ""]
    topics = list(dict.fromkeys(t for s in configs.values() for t in s.get("per_topic", {})))
    names = list(configs)
    lines += ["| topic | n | " + " | ".join(label(n) for n in names) + " |", "|" + "---|" * (len(names) + 2)]
    for t in topics:
        n = max(s.get("per_topic", {}).get(t, {}).get("n", 0) for s in configs.values())
        cells = [f"{pct_ci(e)} / {score_ci(e)}" if (e := configs[name].get("per_topic", {}).get(t)) else "-"
                 for name in names]
        lines.append(f"| {t} | {n} | " + " | ".join(cells) + " |")
    return lines


def success_markdown(report: dict) -> list[str]:
    """The success table (95% Wilson intervals) and the games per task type (ScienceWorld: :func:`topic_markdown`)."""
    if is_scienceworld(report):
        return topic_markdown(report)
    configs: dict[str, dict] = report["configs"]
    partial = [n for n, s in configs.items() if not s.get("complete", True)]
    types = [t for t in TASK_TYPES if any(t in s["per_type"] for s in configs.values())]
    fullest = max(configs.values(), key=lambda s: s["n_episodes"])
    lines = ["| configuration | n | success % [95% CI] | " + " | ".join(types) + " | paper % |",
             "|" + "---|" * (len(types) + 4)]
    for name, s in configs.items():
        cells = [pct_ci(s["per_type"].get(t)) for t in types]
        lines.append(f"| {label(name)}{'*' if name in partial else ''} | {s['n_episodes']} | {pct_ci(s)} | "
                     + " | ".join(cells) + f" | {pct(paper_rate(name))} |")
    lines += ["", "Games per task type: " + ", ".join(f"{t} {fullest['per_type'][t]['n']}" for t in types
                                                      if t in fullest["per_type"])
              + ". Intervals are 95% Wilson score intervals over games; "
                f"paper column: {PAPER['source']}, not our measurement."]
    return lines


def paired_markdown(report: dict) -> list[str]:
    """The paired comparisons: games won by one side only, exact McNemar p, difference with its interval."""
    pairs = report.get("paired") or []
    if not pairs:
        return ["No paired comparison: the rows' summaries carry no per-game outcomes (written by an older duomem) "
                "or a pair's rows are missing; `duomem report` rebuilds a report from the episode records."]
    scored = any("score_difference" in p for p in pairs)
    lines = ["| A | B | games | A won | B won | won by A only | won by B only | A - B, points [95% CI] | "
             "exact McNemar p |" + (" A - B, mean score [95% CI] |" if scored else ""),
             "|" + "---|" * (10 if scored else 9)]
    for p in pairs:
        ci = p["difference_ci95"]
        diff = f"{_signed(p['difference'])} [{_signed(ci[0])}, {_signed(ci[1])}]" if ci else "-"
        line = (f"| {label(p['a'])} | {label(p['b'])} | {p['n_games']} | {p['won_a']} | {p['won_b']} | "
                f"{p['a_only']} | {p['b_only']} | {diff} | {p_value(p['p_value'])} |")
        if scored:
            d, sci = p.get("score_difference"), p.get("score_difference_ci95")
            line += (f" {d:+.1f}" + (f" [{sci[0]:+.1f}, {sci[1]:+.1f}]" if sci else "") + " |") if d is not None \
                else " - |"
        lines.append(line)
    lines += ["", "Each pair is compared on the games both rows played. The two-sided exact McNemar test uses only "
                  "the games one side wins and the other loses (a binomial test of that split against 50:50); the "
                  f"difference's interval is a paired bootstrap over games ({BOOTSTRAP['resamples']:,} resamples, "
                  f"seed {BOOTSTRAP['seed']}). No correction for testing {len(pairs)} pairs."]
    return lines


def cost_markdown(report: dict) -> list[str]:
    configs: dict[str, dict] = report["configs"]
    d = report["derived"]
    lines = ["| configuration | mean steps | invalid % | s/episode | episodes/h | speed-up vs teacher | peak RSS MB |",
             "|" + "---|" * 7]
    for name, s in configs.items():
        lines.append(f"| {label(name)} | {s['mean_steps']:.1f} | {pct(s['invalid_action_rate'])} | "
                     f"{s['wall_s_per_episode']:.1f} | "
                     + (f"{s['episodes_per_hour']:.0f}" if s.get("episodes_per_hour") else "-") + " | "
                     + (f"{d['speedup_vs_teacher'][name]:.2f}x" if name in d["speedup_vs_teacher"] else "-")
                     + f" | {s['peak_rss_mb']:.0f} |")
    lines += ["", "s/episode is each episode's own elapsed time (in a batched run, episodes share the batch's time); "
                  "episodes/h is throughput over the whole run; the speed-up compares throughput where both runs "
                  "have it."]
    return lines


def gap_text(report: dict) -> str | None:
    d = report["derived"]
    if not d.get("gap_closed_by"):
        return None
    parts = []
    for name, g in d["gap_closed_by"].items():
        ci = f" [{pct(g['ci95'][0])}, {pct(g['ci95'][1])}]" if g.get("ci95") else ""
        parts.append(f"{label(name)} {pct(g['value'])}%{ci}")
    return ("Gap closed, (row - no memory) / (teacher - no memory), with a paired bootstrap 95% interval over "
            "games: " + "; ".join(parts) + ".")


def report_markdown(report: dict) -> str:
    configs: dict[str, dict] = report["configs"]
    partial = [n for n, s in configs.items() if not s.get("complete", True)]
    missing = [n for n in report.get("planned", configs) if n not in configs]
    title = "partial report" if partial or missing else "report"
    lines = [f"# DuoMem {title}: {report['name']}", "",
             f"Student `{report['student']}`, teacher `{report['teacher']}`; evaluated on "
             f"{report['eval']['n_games']} games of `{report['eval']['split']}` (max {report['eval']['max_steps']} "
             f"steps, backend {report['eval']['backend']}); memories retrieved top-{report['chosen_k']}.", ""]
    if partial or missing:
        lines += ["**Not finished yet.** " + "; ".join(
            [f"{label(n)}: {configs[n]['n_episodes']} of {configs[n]['n_planned']} games so far"
             for n in partial] + [f"{label(n)}: not started" for n in missing])
            + ". Rerun the same `duomem run` command to continue; rows marked * cover the games finished so far.", ""]
    if configs:
        lines += ["## Success", "", *success_markdown(report), ""]
        if gap := gap_text(report):
            lines += [gap, ""]
        lines += ["## Paired comparisons", "", *paired_markdown(report), "",
                  "## Cost", "", *cost_markdown(report), ""]
    art = report["artifacts"]
    lines += ["## Artefacts", "", "| artefact | size | details |", "|---|---|---|"]
    for key in ("own_bank", "teacher_bank"):
        b = art.get(key)
        if b:
            lines.append(f"| {key.replace('_', ' ')} | {b['size_bytes'] / 1e6:.2f} MB | {b['n_entries']} memories, "
                         f"writer {', '.join(b['writers']) or '-'}, retrieval {b['retrieval']} "
                         f"({b['embedder'] or 'bm25'}) |")
    for name, lo in art.get("loras", {}).items():
        if lo.get("method") == "full":
            what = (f"| full fine-tune for {label(name)} | {lo['gguf_bytes'] / 1e6:.1f} MB GGUF model "
                    f"({lo['peft_bytes'] / 1e6:.1f} MB safetensors) | every weight, ")
        else:
            what = (f"| LoRA for {label(name)} | {lo['gguf_bytes'] / 1e6:.1f} MB GGUF "
                    f"({lo['peft_bytes'] / 1e6:.1f} MB peft) | rank {lo['rank']}, alpha {lo['alpha']}, ")
        lines.append(what + f"{lo['trainable_params'] / 1e6:.2f}M trainable params, {lo['examples']} examples, "
                     f"{lo['tokens_per_epoch'] * lo['epochs']:.0f} train tokens, {lo['steps']} steps, "
                     f"{lo['wall_s']:.0f} s on {lo['hardware']}, loss {lo['loss_first']} -> {lo['loss_last']} |")
    tc = art.get("teacher_collect")
    if tc:
        lines += ["", f"Teacher trajectories: {tc['episodes']} episodes, {tc['won']} won, {tc['demonstrations']} "
                      f"distinct demonstrations ({report['teacher']})."]
    if report["k_sweep"]:
        lines += ["", f"## k sweep (teacher memory, `{report['tune']['split']}`, {report['tune']['n_games']} games)",
                  "", "| k | success % [95% CI] | n |", "|---|---|---|"]
        for k, s in report["k_sweep"].items():
            lines.append(f"| {k} | {pct_ci(s)} | {s['n_episodes']} |")
        lines.append(f"\nChosen k = {report['chosen_k']} (best success; a tie keeps the configured `memory.top_k` "
                     "when it is among the best, else the smaller k).")
    lines += ["", "![success per task type](success_per_type.png)", "",
              "![success against time](success_vs_time.png)", ""]
    return "\n".join(lines)


def _colours(names: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {name: cmap(i % 10) for i, name in enumerate(names)}


def _whiskers(entries: list[dict | None]) -> tuple[list[float], list[list[float]]]:
    """Bar heights (%) and matplotlib's asymmetric error bars for the 95% intervals of rate entries."""
    heights, low, high = [], [], []
    for e in entries:
        if e is None:
            heights.append(0.0)
            low.append(0.0)
            high.append(0.0)
            continue
        lo, hi = interval(e)
        heights.append(100 * e["success_rate"])
        low.append(max(0.0, 100 * (e["success_rate"] - lo)))
        high.append(max(0.0, 100 * (hi - e["success_rate"])))
    return heights, [low, high]


def plot_per_type(report: dict, path: Path) -> None:
    """Success per task type with 95% whiskers (left) and overall success beside the paper's (right)."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.patches import Patch

    configs = report["configs"]
    names = list(configs)
    colours = _colours(names)
    group = "per_topic" if is_scienceworld(report) else "per_type"
    types = list(dict.fromkeys(t for s in configs.values() for t in s.get(group, {}))) if group == "per_topic" \
        else [t for t in TASK_TYPES if any(t in s["per_type"] for s in configs.values())]
    fig, (ax, side) = plt.subplots(1, 2, figsize=(14, 5.6), width_ratios=[2.6, 1], dpi=DPI)
    width = 0.84 / max(1, len(names))
    x = np.arange(len(types))
    for i, name in enumerate(names):
        heights, err = _whiskers([configs[name].get(group, {}).get(t) for t in types])
        ax.bar(x + (i - (len(names) - 1) / 2) * width, heights, width, yerr=err, capsize=1.5,
               error_kw={"elinewidth": 0.8, "ecolor": "0.25"}, color=colours[name], label=label(name))
    fullest = max(configs.values(), key=lambda s: s["n_episodes"])
    ax.set_xticks(x, [f"{t}\n({fullest.get(group, {}).get(t, {}).get('n', 0)} games)" for t in types],
                  fontsize=8 if group == "per_topic" else None, rotation=30 if group == "per_topic" else 0)
    ax.set_ylabel("success % (whiskers: 95% Wilson interval)")
    ax.set_ylim(0, 105)
    ax.set_title(f"success per {'topic' if group == 'per_topic' else 'task type'} ({report['eval']['split']})",
                 fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    y = np.arange(len(names))[::-1]
    heights, err = _whiskers([configs[n] for n in names])
    side.barh(y + 0.2, heights, 0.4, xerr=err, capsize=2, error_kw={"elinewidth": 0.8, "ecolor": "0.25"},
              color=[colours[n] for n in names])
    paper = [None if group == "per_topic" else paper_rate(n) for n in names]  # the paper reports ALFWorld only
    paper_style = {"facecolor": "white", "edgecolor": "0.3", "hatch": "///"}
    side.barh([yy - 0.2 for yy, p in zip(y, paper, strict=True) if p is not None],
              [100 * p for p in paper if p is not None], 0.4, **paper_style)
    side.set_yticks(y, [label(n) for n in names], fontsize=8)
    side.set_xlim(0, 105)
    side.set_xlabel("success %, all games")
    side.set_title("ours (with 95% interval) and the paper's", fontsize=10)
    side.legend(handles=[Patch(color="0.55", label="ours (colour of the row)"),
                         Patch(**paper_style, label=f"paper ({PAPER['source'].split(', ')[2]})")],
                fontsize=7, loc="upper right")
    side.grid(axis="x", alpha=0.3)
    side.set_axisbelow(True)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(names)), fontsize=8, frameon=False)
    fig.suptitle(f"{report['name']}: {report['eval']['n_games']} games of {report['eval']['split']}", fontsize=11)
    fig.tight_layout(rect=(0, 0.1 if len(names) > 4 else 0.06, 1, 1))
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def place_labels(ax, points: list[tuple[float, float]], texts: list[str], obstacles: list | None = None,
                 colours: list | None = None, fontsize: float = 8) -> list:
    """Annotate each point with its text where the text overlaps no other label and no obstacle (display-space
    boxes, e.g. markers and whiskers) and stays inside the axes: the first free place among offsets right, left,
    above, below and then further up or down (with a leader line). Returns the annotations."""
    from matplotlib.text import Text

    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    taken = list(obstacles or [])
    candidates = [(8, 0, "left"), (-8, 0, "right"), (0, 12, "center"), (0, -12, "center")]
    for step in range(1, 10):
        for dy in (12 * step, -12 * step):
            candidates += [(12, dy, "left"), (-12, dy, "right")]
    placed = []
    for (px, py), text, colour in zip(points, texts, colours or ["black"] * len(texts), strict=True):
        for dx, dy, ha in candidates:
            leader = {"arrowstyle": "-", "color": "0.5", "lw": 0.6} if dx and dy else None
            note = ax.annotate(text, (px, py), xytext=(dx, dy), textcoords="offset points", ha=ha, va="center",
                               fontsize=fontsize, color=colour, arrowprops=leader)
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer).padded(2)  # the text alone, not its leader line
            if (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1
                    and not any(box.overlaps(b) for b in taken)):
                break
            note.remove()
        else:  # nowhere free: keep the first place rather than drop the label
            note = ax.annotate(text, (px, py), xytext=candidates[0][:2], textcoords="offset points", ha="left",
                               va="center", fontsize=fontsize, color=colour)
            note.update_positions(renderer)
            box = Text.get_window_extent(note, renderer)
        placed.append(note)
        taken.append(box)
    return placed


def plot_success_vs_time(report: dict, path: Path) -> tuple[list, object]:
    """Success (95% whiskers) against seconds per episode, log scale, every point labelled without collisions.
    Returns the labels' boxes and the axes' box, in display space (for checks)."""
    import matplotlib.pyplot as plt
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    configs = report["configs"]
    names = [n for n, s in configs.items() if s["wall_s_per_episode"] > 0]
    colours = _colours(list(configs))
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=DPI)
    xs = [configs[n]["wall_s_per_episode"] for n in names]
    heights, err = _whiskers([configs[n] for n in names])
    for n, xv, yv, lo, hi in zip(names, xs, heights, *err, strict=True):
        ax.errorbar([xv], [yv], yerr=[[lo], [hi]], fmt="o", color=colours[n], ms=6, capsize=3, elinewidth=1)
    ax.set_xscale("log")
    if xs:
        ax.set_xlim(min(xs) / 2.2, max(xs) * 9)  # room on the right for labels of the slowest rows
    ax.set_ylim(-14, 112)
    ax.set_xlabel("seconds per episode on its machine (log scale)")
    ax.set_ylabel("success % (whiskers: 95% Wilson interval)")
    ax.set_title(f"{report['name']}: success against time per episode", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.canvas.draw()
    to_px = ax.transData.transform
    obstacles = []
    for xv, yv, lo, hi in zip(xs, heights, *err, strict=True):
        (x0, y0), (x1, y1) = to_px((xv, yv - lo)), to_px((xv, yv + hi))
        obstacles.append(Bbox([[x0 - 5, min(y0, y1) - 5], [x1 + 5, max(y0, y1) + 5]]))
    labels = place_labels(ax, [(xv, yv) for xv, yv in zip(xs, heights, strict=True)], [label(n) for n in names],
                          obstacles, [colours[n] for n in names])
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(note, renderer) for note in labels]
    inside = ax.get_window_extent(renderer)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return boxes, inside


def plot(report: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    plot_per_type(report, Path(out) / "success_per_type.png")
    plot_success_vs_time(report, Path(out) / "success_vs_time.png")


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
        "configs": {n: _row(s) for n, s in summaries.items()},
        "k_sweep": {str(k): {"success_rate": s["success_rate"], "n_episodes": s["n_episodes"],
                             "success_ci95": list(interval(s))} for k, s in k_sweep.items()},
        "chosen_k": chosen_k,
        "artifacts": artifacts,
        "derived": derived(summaries),
        "paired": paired(summaries),
        "bootstrap": BOOTSTRAP,
        "paper": PAPER,
    }


def write_report_files(report: dict, out: Path) -> Path:
    """Write ``report.json``, ``report.md`` and the plots into ``out``; returns the Markdown path."""
    out = Path(out)
    atomic_write_json(out / "report.json", report)
    atomic_write_text(out / "report.md", report_markdown(report))
    if report["configs"]:
        plot(report, out)
    return out / "report.md"


def write_report(root: Path, cfg, summaries: dict[str, dict], k_sweep: dict[int, dict], chosen_k: int,
                 artifacts: dict, eval_games: int, planned: list[str] | None = None) -> Path:
    """The pipeline's report into ``root``; returns the Markdown path."""
    oracle = "ScienceWorld gold paths (oracle)" if cfg.data.source == "scienceworld" else \
        "ALFWorld handcoded expert (oracle)"
    teacher = oracle if cfg.teacher.policy == "expert" else cfg.teacher.model
    report = build_report(
        cfg.name, cfg.student.model, teacher, summaries, k_sweep, chosen_k, artifacts,
        eval_info={"split": cfg.data.eval_split, "n_games": eval_games, "max_steps": cfg.eval.max_steps,
                   "backend": cfg.eval.backend},
        tune_info={"split": cfg.data.tune_split,
                   "n_games": next(iter(k_sweep.values()))["n_episodes"] if k_sweep else 0},
        planned=planned,
    )
    return write_report_files(report, root)


# --- a report from published records ---------------------------------------------------------------------------
_ROW = re.compile(r"eval_(?P<row>.+)-[0-9a-f]{12}")
_TUNE = re.compile(r"tune_teacher_memory_k(?P<k>\d+)")


def report_inputs(report: dict) -> dict:
    """What a records folder keeps of a report besides the records (see :data:`INPUTS`)."""
    return {k: report[k] for k in INPUT_KEYS if k in report}


def summary_from_records(folder: Path) -> dict:
    """An evaluation folder's summary with its statistics recomputed from its ``episodes.jsonl`` (date and host
    kept from when it ran)."""
    from duomem.eval.runner import load_records

    stored = json.loads((folder / "summary.json").read_text())
    records = sorted(load_records(folder), key=lambda r: (r.game_id, r.sample))  # as write_summary orders them
    won, n = sum(r.won for r in records), stored["n_episodes"]
    if len(records) != n or won != round(stored["success_rate"] * n):
        raise DataError(f"{folder}: episodes.jsonl ({len(records)} episodes, {won} won) does not match "
                        f"summary.json ({n} episodes, success {stored['success_rate']:.3f}); publish the records "
                        "of exactly the summarised games")
    fresh = summarize(records, stored["name"], stored["policy"], stored.get("model"), stored["split"])
    return {**stored, **fresh, **{k: stored[k] for k in ("date", "host") if k in stored}}


def report_from_records(folder: Path) -> dict:
    """The report of a published records folder: ``report_inputs.json`` plus one ``eval_<row>-<key>/`` folder
    per row (``eval_tune_teacher_memory_k<k>-<key>/`` for the k sweep), as ``benchmarks/publish.py`` writes it."""
    folder = Path(folder)
    if not (folder / INPUTS).is_file():
        raise DataError(f"{folder} has no {INPUTS}: not a published records folder (see benchmarks/publish.py)")
    inputs = json.loads((folder / INPUTS).read_text())
    rows: dict[str, dict] = {}
    k_sweep: dict[int, dict] = {}
    for path in sorted(folder.iterdir()):
        match = _ROW.fullmatch(path.name)
        if not match or not (path / "summary.json").is_file():
            continue
        row = match["row"]
        if row in rows or ((tune := _TUNE.fullmatch(row)) and int(tune["k"]) in k_sweep):
            raise DataError(f"{folder} holds two record folders for row {row}; keep one")
        if tune:
            k_sweep[int(tune["k"])] = summary_from_records(path)
        else:
            rows[row] = summary_from_records(path)
    if not rows:
        raise DataError(f"{folder} holds no evaluation folders (eval_<row>-<key>/ with summary.json)")
    planned = inputs.get("planned") or list(rows)
    order = [n for n in planned if n in rows] + [n for n in rows if n not in planned]
    return build_report(inputs["name"], inputs["student"], inputs["teacher"], {n: rows[n] for n in order},
                        dict(sorted(k_sweep.items())), inputs["chosen_k"], inputs["artifacts"], inputs["eval"],
                        inputs["tune"], planned=planned)
