"""``duomem eval`` and ``duomem collect``: play episodes, write records and a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from duomem.cli import comma_list
from duomem.envs.base import MAX_STEPS, TaskSpec
from duomem.errors import ConfigError
from duomem.eval.runner import Executor
from duomem.eval.spec import (
    ActionSelection,
    Backend,
    ExampleSource,
    FewshotSet,
    Policy,
    RolloutSpec,
    ScoreNorm,
)
from duomem.memory.bank import Retrieval
from duomem.memory.entry import MemoryFormat

console = Console()

PolicyOpt = Annotated[Policy, typer.Option(help="expert (ALFWorld's handcoded oracle; ScienceWorld's gold teacher) "
                                                "or llm.")]
Model = Annotated[str | None, typer.Option(help="Model name (duomem models list), .gguf path, hf:ORG/NAME or "
                                                "openai:MODEL@URL.")]
Games = Annotated[int | None, typer.Option(help="Play a seeded subset of N games (all by default).")]
ExecutorOpt = Annotated[Executor, typer.Option(help="local (worker processes on this machine) or ray (--workers Ray "
                                            "actors on RAY_ADDRESS's cluster, or a local Ray instance).")]
Tasks = Annotated[Path | None, typer.Option(help="Task set folder with index/<split>.jsonl (default: the prepared "
                                                "ALFWorld sets; ScienceWorld's: <data root>/scienceworld after "
                                                "duomem data prepare --env scienceworld).")]


TaskTypes = Annotated[str | None, typer.Option(help="Play only games of these task types (comma-separated, e.g. "
                                                    "heat,cool; all by default).")]


def _choose(split: str, tasks: Path | None, games: int | None, seed: int, samples: int,
            samples_flag: str = "--samples", task_types: str | None = None) -> list[TaskSpec]:
    """The games to play (of ``task_types`` only, when given); an empty selection is refused (nothing would be
    played or summarised)."""
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import select_games

    if games is not None and games < 1:
        raise ConfigError(f"--games must be at least 1 (got {games}); leave it out to play every game")
    if samples < 1:
        raise ConfigError(f"{samples_flag} must be at least 1 (got {samples})")
    pool = load_tasks(split, tasks)
    if task_types:
        wanted = set(comma_list(task_types))
        known = {t.task_type for t in pool}
        if unknown := sorted(wanted - known):
            raise ConfigError(f"--task-types: {', '.join(unknown)} not among the split's task types "
                              f"({', '.join(sorted(known))})")
        pool = [t for t in pool if t.task_type in wanted]
    chosen = select_games(pool, games, seed)
    if not chosen:
        raise ConfigError(f"split {split!r} has no games to play")
    return chosen


def _spec(**kw) -> RolloutSpec:
    return RolloutSpec(**{k: v for k, v in kw.items() if v is not None})


def _default_name(spec: RolloutSpec, split: str, games: int | None, task_types: str | None = None) -> str:
    who = spec.model.split("/")[-1].removesuffix(".gguf") if spec.model else spec.policy
    tags = []
    if spec.adapter:
        tags.append("lora")
    if spec.memory:
        tags.append(f"mem-{Path(spec.memory).name}-k{spec.top_k}"
                    + ("-sametype" if spec.retrieval == "same_type" else ""))
    if spec.policy == "llm" and not tags:
        tags.append("nomem")
    if spec.note:
        tags.append("note")
    if spec.unseen_types:
        tags.append("unseen-" + "+".join(sorted(spec.unseen_types)))
    if spec.examples == "bank":
        tags.append("bank-examples")
    if spec.policy == "llm" and spec.action_selection != "free":
        tags.append(spec.action_selection + ("-mean" if spec.action_selection == "score" and
                                             spec.score_norm == "mean" else ""))
    if spec.loop_limit:
        tags.append(f"loop{spec.loop_limit}")
    if task_types:
        tags.append("+".join(sorted(comma_list(task_types))))
    if games:
        tags.append(f"n{games}")
    return "-".join([who, *tags, split])


def eval_command(
    policy: PolicyOpt = "llm",
    model: Model = None,
    student: Annotated[str | None, typer.Option(help="A shipped student (duomem models list): its base model, "
                                                     "adapter, memory bank and play settings, as in its "
                                                     "committed result.")] = None,
    split: Annotated[str, typer.Option(help="train, valid_seen or valid_unseen (or a generated split; ScienceWorld: "
                                            "train, dev or test).")] = "valid_unseen",
    games: Games = None,
    task_types: TaskTypes = None,
    max_steps: Annotated[int, typer.Option(help="Turn limit per episode (thoughts count). On ScienceWorld the default "
                                                "means the environment's own: 1000 for the expert (gold paths run "
                                                "to ~750 actions), 100 for an agent.")] = MAX_STEPS,
    loop_limit: Annotated[int | None, typer.Option(help="End an episode, lost, once its last turns are one cycle "
                                                        "played N times over, word for word (4 never ended a won "
                                                        "episode of the committed runs; default: off).")] = None,
    workers: Annotated[int, typer.Option(help="Parallel episode processes (1 thread each) or actors.")] = 1,
    executor: ExecutorOpt = "local",
    batch: Annotated[int, typer.Option(help="Episodes stepped together in one process, one batched generate per "
                                            "step (games in worker processes; transformers batches on a GPU).")]
    = 1,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter: peft folder or GGUF LoRA file.")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory bank folder.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Memories retrieved per task.")] = 2,
    retrieval: Annotated[Retrieval, typer.Option(help="similarity: top-k over the whole bank (the paper); "
                                                      "same_type: top-k among the task type's memories.")]
    = "similarity",
    shots: Annotated[int, typer.Option(help="Few-shot examples of the task's type in the prompt (0-2).")] = 2,
    fewshot: Annotated[FewshotSet, typer.Option(help="Few-shot example set: train (ALFWorld train games, the committed "
                                              "runs) or heldout (generated games on unused floor plans).")]
    = "train",
    memory_format: Annotated[MemoryFormat | None, typer.Option(
        help="How memories are shown: script, trajectory, both, abstract or typed (typed: instance numbers dropped, "
             "place types kept, after where-found priors; default: the bank's format).")] = None,
    actions: Annotated[ActionSelection, typer.Option(help="Action selection: free (generate; text that is no admissible "
                                              "command is played as written), grammar (decoding constrained to "
                                              "a command or a thought) or score (the most probable admissible "
                                              "command or think:).")] = "free",
    score_norm: Annotated[ScoreNorm, typer.Option(help="With --actions score: mean (log-probability per token, chosen on "
                                                 "valid_seen) or sum (summed).")] = "mean",
    history_window: Annotated[int | None, typer.Option(help="Keep only the last N turns (default: all).")] = None,
    note: Annotated[bool, typer.Option("--note/--no-note", help="Write the episodic note under each game answer "
                                                                "(places not visited yet, closed ones, where the "
                                                                "task's objects were seen); for students trained "
                                                                "with it.")] = False,
    unseen_types: Annotated[str | None, typer.Option(help="Task types the student never learned (comma-separated): "
                                                          "their prompts show solved examples of another type "
                                                          "(pick) in place of their own, so memories are the "
                                                          "only source of the procedure.")] = None,
    examples: Annotated[ExampleSource, typer.Option(help="Where the prompt's solved examples come from: fixed (the "
                                                          "packaged few-shot set) or bank (the --memory bank's "
                                                          "solved episodes of the task's type, kept with `duomem "
                                                          "memory add --transcripts`; the packaged ones complete "
                                                          "them).")] = "fixed",
    backend: Annotated[Backend, typer.Option(help="Model backend (auto: llama.cpp for GGUF models, transformers "
                                                  "for hf:, openai for openai:).")] = "auto",
    device: Annotated[str, typer.Option(help="transformers backend device: cpu or cuda.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads per model.")] = None,
    seed: Annotated[int, typer.Option(help="Run seed (episode seeds derive from it).")] = 0,
    samples: Annotated[int, typer.Option(help="Episodes per game.")] = 1,
    temperature: Annotated[float, typer.Option(help="0 = greedy.")] = 0.0,
    expert_fix: Annotated[bool, typer.Option(help="Expert: repair its inventory tracking under ALFWorld 0.4's "
                                                  "'move' grammar (--no-expert-fix: as released).")] = True,
    tasks: Tasks = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/eval/<name>).")] = None,
    name: Annotated[str | None, typer.Option(help="Run name for tables.")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Evaluate a policy; resumable (rerun the same command to continue)."""
    from duomem.eval.runner import run_rollouts
    from duomem.eval.summary import pct_ci

    settings = dict(policy=policy, model=model, max_steps=max_steps, loop_limit=loop_limit, adapter=adapter,
                    memory=memory, top_k=top_k, retrieval=retrieval, shots=shots, fewshot=fewshot,
                    memory_format=memory_format,
                    action_selection=actions if policy == "llm" else None,
                    score_norm=score_norm if policy == "llm" else None,
                    history_window=history_window, note=note if policy == "llm" else None, backend=backend,
                    unseen_types=comma_list(unseen_types) if unseen_types else None,
                    examples=examples if policy == "llm" else None,
                    device=device,
                    threads=threads, seed=seed, temperature=temperature, batch=batch,
                    expert_fix=expert_fix if policy == "expert" else None)
    if student:
        settings.update(_student_fields(student, policy=policy, model=model, adapter=adapter, memory=memory))
    spec = _spec(**settings)
    chosen = _choose(split, tasks, games, seed, samples, task_types=task_types)
    _export_adapter(spec)
    types = "-" + "+".join(sorted(t.strip() for t in task_types.split(","))) if task_types else ""
    name = name or (f"{student}{types}-{split}" + (f"-n{games}" if games else "") if student else
                    _default_name(spec, split, games, task_types))
    out = out or Path("runs") / "eval" / name
    result = run_rollouts(spec, chosen, out, name=name, workers=workers, samples=samples, show_progress=progress,
                          executor=executor)
    s = result.summary
    score = ""
    if s.get("mean_score") is not None:
        low, high = s["mean_score_ci95"] or (s["mean_score"], s["mean_score"])
        score = f", mean score {s['mean_score']:.1f} [{low:.1f}, {high:.1f}]"
    console.print(f"{name}: {s['n_won']}/{s['n_episodes']} won ({pct_ci(s)} %, 95% interval){score}, "
                  f"{s['wall_s_per_episode']:.1f} s/episode; records and summary in {out}")


def _student_fields(name: str, **given: str | None) -> dict:
    """A shipped student's model, adapter, bank and play settings; the options a student sets itself may not be
    given too."""
    from duomem.eval.students import get_student

    clash = [f"--{k}" for k in ("model", "adapter", "memory") if given.get(k)]
    if given.get("policy") != "llm":
        clash.append("--policy expert")
    if clash:
        raise ConfigError(f"--student sets the model, adapter and memory itself; leave out {', '.join(clash)}")
    return get_student(name).spec_fields()


def _export_adapter(spec: RolloutSpec) -> None:
    """llama.cpp reads a peft adapter folder's ``adapter.gguf``: export it once, before any model is loaded."""
    if spec.adapter and Path(spec.adapter).is_dir() and not spec.uses_transformers and not spec.uses_openai:
        from duomem.distill.export import ensure_gguf_adapter

        ensure_gguf_adapter(spec.adapter)


def collect_command(
    policy: PolicyOpt = "expert",
    model: Model = None,
    split: Annotated[str, typer.Option(help="Split to collect on (train: no leakage into evaluation).")] = "train",
    games: Games = None,
    samples_per_task: Annotated[int, typer.Option(help="Episodes per task (expert: sample 0 is the plain expert, "
                                                       "later ones explore; llm: sampled decoding).")] = 1,
    explore: Annotated[float, typer.Option(help="Expert: chance of a detour before the target is taken, for "
                                               "samples after the first.")] = 0.3,
    temperature: Annotated[float, typer.Option(help="llm: temperature for samples after the first.")] = 0.7,
    max_steps: Annotated[int, typer.Option(help="Turn limit per episode.")] = MAX_STEPS,
    workers: Annotated[int, typer.Option(help="Parallel episode processes or Ray actors.")] = 1,
    executor: ExecutorOpt = "local",
    shots: Annotated[int, typer.Option(help="Few-shot examples (llm).")] = 2,
    threads: Annotated[int | None, typer.Option(help="CPU threads per model.")] = None,
    seed: Annotated[int, typer.Option(help="Run seed.")] = 0,
    tasks: Tasks = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default runs/collect/<name>).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Run a policy over (train) tasks and keep its trajectories (``trajectories.jsonl``), resumable."""
    from duomem.eval.collect import collect, diverse

    chosen = _choose(split, tasks, games, seed, samples_per_task, "--samples-per-task")
    who = model.split("/")[-1].removesuffix(".gguf") if model else policy
    out = out or Path("runs") / "collect" / f"{who}-{split}-n{len(chosen)}-s{samples_per_task}"
    spec = _spec(policy=policy, model=model, max_steps=max_steps, shots=shots, threads=threads, seed=seed)
    report = collect(spec, chosen, out, samples=samples_per_task,
                     diverse_spec=diverse(spec, explore=explore, temperature=temperature), workers=workers,
                     executor=executor, show_progress=progress)
    console.print(f"collected {report['episodes']} episodes ({report['won']} won) of {len(chosen)} tasks; "
                  f"trajectories in {report['trajectories']}")
