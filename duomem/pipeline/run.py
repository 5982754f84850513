"""``duomem run``: teacher trajectories -> student trajectories -> memory banks -> k on the tuning split ->
SFT data -> LoRA -> the ablation matrix on the evaluation games -> report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Literal, get_args

from rich.console import Console

from duomem.envs.base import TaskSpec
from duomem.errors import ConfigError
from duomem.eval.runner import select_games
from duomem.eval.spec import KEY_VERSION, RolloutSpec
from duomem.jsonl import atomic_write_text
from duomem.pipeline.config import ROWS, PipelineConfig
from duomem.pipeline.stages import StageResult, StageRunner

Phase = Literal["collect", "memory", "tune", "sft", "lora", "eval"]
PHASES: tuple[str, ...] = get_args(Phase)


def _ids(tasks: list[TaskSpec]) -> list[str]:
    return [t.game_id for t in tasks]


def _collect_key(spec: RolloutSpec, others: RolloutSpec | None, samples: int, tasks: list[TaskSpec]) -> dict:
    """A collection stage's key: the specs that play sample 0 and the later samples (their full keys but batching:
    a collection batched on a GPU serves a run that evaluates elsewhere), how many samples and which games."""

    def played(s: RolloutSpec) -> dict:
        return {k: v for k, v in s.key_fields().items() if k not in ("batch", "batch_tokens")}

    return {"spec": played(spec), "samples": samples, "games": _ids(tasks),
            "diverse": played(others) if others is not None and samples > 1 else None}


def _writer_backend(writer: str) -> str:
    """llama.cpp for a GGUF writer, else the backend its name asks for (``openai:`` for a served teacher, ``hf:``
    for transformers)."""
    return "auto" if writer.startswith(("openai:", "hf:")) else "llamacpp"


def _tuned(info: dict) -> dict:
    """What a row trained for plays: the base model with its adapter, or the fully fine-tuned GGUF model."""
    return {"model": info["model"]} if "model" in info else {"adapter": info["adapter"]}


def choose_k(success: dict[int, float], default: int) -> int:
    """The k with the best tuning success; a tie keeps ``default`` (``memory.top_k``) when it is among the best,
    else the smallest of the best (no evidence for a change keeps the prior choice)."""
    top = max(success.values())
    best = [k for k, s in success.items() if s == top]
    return default if default in best else min(best)


class Pipeline:
    """One DuoMem experiment, as configured."""

    def __init__(self, cfg: PipelineConfig, console: Console | None = None, show_progress: bool = True,
                 until: Phase | None = None, report_only: bool = False) -> None:
        if until is not None and until not in PHASES:
            raise ConfigError(f"--until must be one of {', '.join(PHASES)}, not {until!r}")
        self.until = until
        self.cfg = cfg
        self.root = Path(cfg.output)
        self.console = console or Console()
        self.report_only = report_only
        """Run nothing; report the evaluations finished so far (unfinished ones as partial rows)."""
        self.stages = StageRunner(self.root, self.console, dry=report_only)
        self.show_progress = show_progress
        self.summaries: dict[str, dict] = {}
        self.k_sweep: dict[int, dict] = {}
        self.chosen_k = cfg.memory.top_k
        self.artifacts: dict[str, dict] = {}

    # --- tasks ---------------------------------------------------------------------------------------------------
    def _task_root(self) -> Path | None:
        if not hasattr(self, "_root_cache"):
            self._root_cache = self._make_task_root()
        return self._root_cache

    def _make_task_root(self) -> Path | None:
        cfg = self.cfg
        if cfg.data.source == "generated" and not cfg.data.tasks:
            from duomem.envs.generate import generate_tasks

            inputs = {"n": cfg.data.generate_n, "test_n": cfg.data.generate_test_n, "seed": cfg.seed, "v": 1}
            result = self.stages.run("generate", inputs, lambda d: generate_tasks(
                d, n=cfg.data.generate_n, test_n=cfg.data.generate_test_n, seed=cfg.seed,
                workers=cfg.eval.workers, show_progress=self.show_progress))
            return result.path
        if cfg.data.tasks:
            return Path(cfg.data.tasks)
        if cfg.data.source == "scienceworld":
            from duomem.envs.scienceworld_data import scienceworld_root

            return scienceworld_root()
        return None

    def _tasks(self, split: str, n: int | None) -> list[TaskSpec]:
        from duomem.envs.alfworld_data import load_tasks

        return select_games(load_tasks(split, self._task_root()), n, self.cfg.seed)

    def _eval_tasks(self, split: str, n: int | None) -> list[TaskSpec]:
        """Evaluation and tuning games: from the training task set, or the official ALFWorld sets when
        ``data.eval_source`` is ``alfworld``."""
        from duomem.envs.alfworld_data import load_tasks

        root = None if self.cfg.data.eval_source == "alfworld" else self._task_root()
        return select_games(load_tasks(split, root), n, self.cfg.seed)

    # --- specs ---------------------------------------------------------------------------------------------------
    @property
    def collect_backend(self) -> str:
        return self.cfg.student.collect_backend or self.cfg.eval.backend

    def student_spec(self, backend: str | None = None, **kw) -> RolloutSpec:
        cfg = self.cfg
        if kw.get("memory"):
            kw.setdefault("retrieval", cfg.memory.retrieval)
            kw.setdefault("memory_format", cfg.memory.show_format)
        backend = backend or cfg.eval.backend
        kw.setdefault("model", cfg.student.model)
        return RolloutSpec(policy="llm", shots=cfg.student.shots, fewshot=cfg.student.fewshot,
                           n_ctx=cfg.student.n_ctx,
                           max_steps=cfg.eval.max_steps, loop_limit=cfg.eval.loop_limit, seed=cfg.seed,
                           threads=cfg.eval.threads, backend=backend, device=cfg.eval.device,
                           batch=cfg.eval.batch if backend == "transformers" else 1,
                           action_selection=cfg.eval.action_selection, score_norm=cfg.eval.score_norm,
                           unseen_types=cfg.lora.leave_out_types, **kw)

    def teacher_spec(self, max_steps: int | None = None) -> RolloutSpec:
        """The teacher as it plays: the evaluation row (``eval.max_steps``) or its collection
        (``teacher.max_steps``)."""
        t, cfg = self.cfg.teacher, self.cfg
        steps = max_steps or cfg.eval.max_steps
        if t.policy == "expert":
            return RolloutSpec(policy="expert", max_steps=steps, seed=cfg.seed, shots=t.shots, threads=cfg.eval.threads)
        return RolloutSpec(policy="llm", model=t.model, adapter=t.adapter, memory=t.memory, top_k=t.top_k,
                           shots=t.shots, max_steps=steps, seed=cfg.seed, threads=cfg.eval.threads,
                           backend=t.backend, device=t.device, batch=t.batch)

    # --- stages --------------------------------------------------------------------------------------------------
    def collect_teacher(self) -> StageResult:
        from duomem.eval.collect import collect, diverse

        cfg = self.cfg
        tasks = self._tasks(cfg.data.train_split, cfg.data.train_games)
        spec = self.teacher_spec(max_steps=cfg.teacher.max_steps)
        others = diverse(spec, explore=cfg.teacher.explore, temperature=cfg.teacher.temperature)
        samples = cfg.teacher.samples_per_task
        return self.stages.run("teacher_collect", _collect_key(spec, others, samples, tasks), lambda d: collect(
            spec, tasks, d, samples=samples, diverse_spec=others, workers=cfg.eval.workers,
            show_progress=self.show_progress))

    def collect_student(self) -> StageResult:
        from duomem.eval.collect import collect

        cfg = self.cfg
        tasks = self._tasks(cfg.data.train_split, cfg.data.student_train_games)
        spec = self.student_spec(backend=self.collect_backend)
        return self.stages.run("student_collect", _collect_key(spec, None, 1, tasks), lambda d: collect(
            spec, tasks, d, samples=1, workers=self._workers(spec), show_progress=self.show_progress))

    def _workers(self, spec: RolloutSpec) -> int:
        """A batch is stepped in one process; otherwise ``eval.workers`` processes."""
        return 1 if spec.batch > 1 else self.cfg.eval.workers

    def build_bank(self, name: str, source: StageResult, file: str, writer: str, include_failures: bool,
                   backend: str = "llamacpp") -> StageResult:
        from duomem.llm import load_chat_model
        from duomem.memory.build import build_bank, load_trajectories

        cfg = self.cfg
        from duomem.memory.writer import writer_prompt_version

        inputs = {**cfg.memory.bank_fields(), "source": source.key, "file": file, "writer": writer,
                  "writer_backend": backend, "include_failures": include_failures, "seed": cfg.seed,
                  "writer_prompt": writer_prompt_version(cfg.data.source)}

        def work(d: Path) -> dict:
            trajs = load_trajectories(source.path / file)
            games = {t.game_id: t for t in trajs}
            tasks = [TaskSpec(game_id=g, split=t.split, task_type=t.task_type, game_file="", goal=t.goal)
                     for g, t in sorted(games.items())]
            keep = set(_ids(select_games(tasks, cfg.memory.games, cfg.seed)))
            chosen = d / "input.jsonl"
            atomic_write_text(chosen, "".join(t.model_dump_json() + "\n" for t in trajs if t.game_id in keep))
            threads = cfg.eval.threads or os.cpu_count()
            needs_model = cfg.memory.format != "trajectory" and writer != "plan"
            model = load_chat_model(writer, backend=backend, threads=threads, device=cfg.eval.device) \
                if needs_model else None
            bank = build_bank(chosen, d / "bank", model or ("plan" if writer == "plan" else None),
                              fmt=cfg.memory.format, include_failures=include_failures, embedder=cfg.memory.embedder,
                              copy_policy=cfg.memory.copy_policy)
            if model is not None:
                model.close()
            return {"bank": str(d / "bank"), **{k: bank.manifest[k] for k in ("n_entries", "size_bytes", "retrieval",
                                                                                 "embedder", "writers", "per_type")}}

        return self.stages.run(name, inputs, work)

    def evaluate(self, name: str, spec: RolloutSpec, tasks: list[TaskSpec], stage_name: str | None = None,
                 partial_ok: bool = False) -> dict | None:
        """The evaluation's summary; with ``partial_ok`` in a report-only run, the summary of the episodes
        finished so far (None when there are none)."""
        inputs = {"spec": spec.fingerprint(), "spec_fields": spec.key_fields(),
                  "games": _ids(tasks), "batch": spec.batch}

        def work(d: Path) -> dict:
            from duomem.eval.runner import run_rollouts

            return run_rollouts(spec, tasks, d, name=name, workers=self._workers(spec),
                                show_progress=self.show_progress).summary

        result = self.stages.run(stage_name or f"eval_{name}", inputs, work, partial_ok=partial_ok)
        if result.finished:
            return result.info
        from duomem.eval.runner import load_records, write_summary

        if not load_records(result.path):
            return None
        return write_summary(result.path, spec, tasks, 1, name)[1]

    def tune_k(self, teacher_bank: StageResult) -> int:
        cfg = self.cfg
        if not cfg.eval.k_sweep:
            return cfg.memory.top_k
        tasks = self._eval_tasks(cfg.data.tune_split, cfg.data.tune_games)
        for k in cfg.eval.k_sweep:
            spec = self.student_spec(memory=teacher_bank.info["bank"], top_k=k)
            self.k_sweep[k] = self.evaluate(f"tune_teacher_memory_k{k}", spec, tasks)
        return choose_k({k: s["success_rate"] for k, s in self.k_sweep.items()}, cfg.memory.top_k)

    def build_sft(self, name: str, teacher: StageResult, bank: StageResult | None, k: int) -> StageResult:
        from duomem.distill.dataset import build_dataset

        cfg = self.cfg
        m = cfg.memory
        settings = {"shots": cfg.student.shots, "top_k": k if bank else 0, "fewshot": cfg.student.fewshot,
                    "leave_out_types": cfg.lora.leave_out_types}
        if bank:
            settings.update(retrieval=m.retrieval, exclude=m.train_exclude, memory_format=m.show_format,
                            memory_dropout=cfg.lora.memory_dropout, dropout_seed=cfg.seed)
        inputs = {"key_version": KEY_VERSION, "teacher": teacher.key, "bank": bank.key if bank else None, **settings}
        return self.stages.run(f"sft_{name}", inputs, lambda d: build_dataset(
            teacher.path / "demonstrations.jsonl", d, memory=bank.info["bank"] if bank else None, **settings))

    def train_lora(self, name: str, sft: StageResult) -> StageResult:
        from duomem.distill.export import MODEL_GGUF, MODEL_WEIGHTS, export_gguf_lora, export_gguf_model
        from duomem.distill.train import train_lora

        cfg = self.cfg
        full = cfg.lora.method == "full"
        inputs = {"sft": sft.key, "student": cfg.student.model, "lora": cfg.lora.key_fields(), "seed": cfg.seed}

        def work(d: Path) -> dict:
            import torch

            device = cfg.lora.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            meta = train_lora(cfg.student.model, sft.path, d / "adapter", cfg.lora.training(cfg.seed), device=device,
                              threads=cfg.eval.threads, show_progress=self.show_progress)
            if full:
                gguf = export_gguf_model(d / "adapter", d / "adapter" / MODEL_GGUF, base_model=cfg.student.model,
                                         quant=cfg.lora.quant)
                (d / "adapter" / MODEL_WEIGHTS).unlink()  # the GGUF is what the rows play
            else:
                gguf = export_gguf_lora(d / "adapter", d / "adapter" / "adapter.gguf", base_model=cfg.student.model)
            if not cfg.lora.keep_checkpoints:
                shutil.rmtree(d / "adapter" / "checkpoints", ignore_errors=True)
            played = {"model": gguf["path"]} if full else {"adapter": str(d / "adapter")}
            return {**played, "method": cfg.lora.method, "gguf_bytes": gguf["bytes"],
                    "peft_bytes": meta["adapter_bytes"], **{k: meta[k] for k in (
                        "trainable_params", "total_params", "examples", "tokens_per_epoch", "trained_tokens_per_epoch",
                        "epochs", "steps", "wall_s", "train_tokens_per_s", "hardware", "loss_first", "loss_last",
                        "rank", "alpha")}}

        return self.stages.run(f"lora_{name}", inputs, work)

    # --- the whole run -------------------------------------------------------------------------------------------
    def _stop(self, phase: str) -> bool:
        if self.until == phase:
            self.console.print(f"stopped after the {phase} stages (--until {phase}); rerun without it to go on")
            return True
        return False

    def run(self) -> Path | None:
        from duomem.pipeline.report import write_report

        cfg = self.cfg
        wanted = set(cfg.eval.configs) | ({"duomem"} if cfg.eval.history_windows else set())
        needs_teacher_data = wanted & {"teacher_memory", "lora", "lora_own_memory", "duomem"}
        needs_own = wanted & {"own_memory", "lora_own_memory"}
        needs_teacher_bank = wanted & {"teacher_memory", "duomem"}
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.root / "config.json", cfg.model_dump_json(indent=2))
        teacher = self.collect_teacher() if needs_teacher_data else None
        student = self.collect_student() if needs_own else None
        if self._stop("collect"):
            return None
        student_writer = cfg.memory.student_writer or cfg.student.model
        own_bank = (self.build_bank("own_bank", student, "trajectories.jsonl", student_writer, True,
                                    backend=self.collect_backend) if student else None)
        teacher_bank = (self.build_bank("teacher_bank", teacher, "demonstrations.jsonl", cfg.teacher_writer, False,
                                        backend=_writer_backend(cfg.teacher_writer))
                        if teacher and needs_teacher_bank else None)
        if self._stop("memory"):
            return None
        if teacher_bank:
            self.chosen_k = self.tune_k(teacher_bank)
        k = self.chosen_k
        if self._stop("tune"):
            return None
        sfts: dict[str, tuple[str, StageResult]] = {}
        if teacher and "lora" in wanted:
            sfts["lora"] = ("plain", self.build_sft("plain", teacher, None, k))
        if teacher and own_bank and "lora_own_memory" in wanted:
            sfts["lora_own_memory"] = ("own", self.build_sft("own", teacher, own_bank, k))
        if teacher and teacher_bank and "duomem" in wanted:
            sfts["duomem"] = ("teacher", self.build_sft("teacher", teacher, teacher_bank, k))
        if self._stop("sft"):
            return None
        loras = {row: self.train_lora(name, sft) for row, (name, sft) in sfts.items()}
        if self._stop("lora"):
            return None
        eval_tasks = self._eval_tasks(cfg.data.eval_split, cfg.data.eval_games)
        banks = {"own": own_bank, "teacher": teacher_bank}
        specs: dict[str, RolloutSpec] = {}
        for name in cfg.eval.configs:
            if name == "teacher":
                specs[name] = self.teacher_spec()
                continue
            lora, bank = ROWS[name]
            kw: dict = {}
            if lora:
                kw.update(_tuned(loras[name].info))
            if bank:
                kw.update(memory=banks[bank].info["bank"], top_k=k)
            specs[name] = self.student_spec(**kw)
        for window in cfg.eval.history_windows:
            base = specs.get("duomem") or self.student_spec(**_tuned(loras["duomem"].info),
                                                            memory=teacher_bank.info["bank"], top_k=k)
            specs[f"duomem_window{window}"] = base.model_copy(update={"history_window": window})
        for name, spec in specs.items():
            summary = self.evaluate(name, spec, eval_tasks, partial_ok=True)
            if summary is not None:
                self.summaries[name] = summary
        self.artifacts = {
            "own_bank": own_bank.info if own_bank else None,
            "teacher_bank": teacher_bank.info if teacher_bank else None,
            "loras": {n: r.info for n, r in loras.items()},
            "teacher_collect": teacher.info if teacher else None,
            "student_collect": student.info if student else None,
        }
        report = write_report(self.root, cfg, self.summaries, self.k_sweep, self.chosen_k, self.artifacts,
                              eval_games=len(eval_tasks), planned=list(specs))
        return report


def run_pipeline(cfg: PipelineConfig, console: Console | None = None, show_progress: bool = True,
                 until: Phase | None = None, report_only: bool = False) -> tuple[Path | None, list[str]]:
    """Run (or resume) the pipeline, up to phase ``until`` if given; returns the report path (None when stopped
    early) and the stages that did work. ``report_only``: run nothing, report what has finished so far."""
    pipe = Pipeline(cfg, console, show_progress, until, report_only)
    report = pipe.run()
    atomic_write_text(pipe.root / "stages_executed.json", json.dumps(pipe.stages.executed))
    return report, pipe.stages.executed
