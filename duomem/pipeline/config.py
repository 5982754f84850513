"""The pipeline's typed configuration: a YAML file plus ``key.path=value`` overrides, checked before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from duomem.distill.export import Quant
from duomem.distill.train import LoraConfig
from duomem.envs.base import MAX_STEPS, TaskType
from duomem.errors import ConfigError
from duomem.eval.spec import KEY_VERSION, ActionSelection, Backend, FewshotSet, Policy, RolloutSpec, ScoreNorm
from duomem.memory.bank import Exclusion, Retrieval
from duomem.memory.build import CopyPolicy
from duomem.memory.entry import MemoryFormat

ROWS: dict[str, tuple[bool, str | None]] = {
    "nomem": (False, None),
    "own_memory": (False, "own"),
    "teacher_memory": (False, "teacher"),
    "lora": (True, None),
    "lora_own_memory": (True, "own"),
    "duomem": (True, "teacher"),
}
"""The student rows of the matrix, the one table the pipeline maps rows to specs with: (a LoRA trained for this
row?, the memory bank it reads: ``own``, ``teacher`` or none). The ``teacher`` row plays the teacher itself."""
CONFIG_NAMES = (*ROWS, "teacher")
DEFAULT_CONFIGS = ("nomem", "own_memory", "teacher_memory", "lora_own_memory", "duomem", "teacher")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StudentConfig(_Strict):
    model: str = "smollm2-135m"
    """The on-device student (a packaged model name, a .gguf path or hf:ORG/NAME)."""
    shots: int = Field(2, ge=0, le=2)
    fewshot: FewshotSet = "train"
    """The few-shot example set (``duomem.agent.prompts.FEWSHOT_SETS``); its games never become SFT targets."""
    n_ctx: int = Field(8192, ge=1024)
    collect_backend: Literal["llamacpp", "transformers"] | None = None
    """Backend for the student's own train-set attempts and for writing its own memories (default:
    ``eval.backend``); e.g. collect batched on a GPU with transformers, evaluate on device with llama.cpp."""


class TeacherConfig(_Strict):
    policy: Policy = "expert"
    """``expert``: ALFWorld's handcoded oracle. ``llm``: a model, e.g. ``openai:Qwen2.5-72B-Instruct@http://host/v1``."""
    model: str | None = None
    shots: int = Field(2, ge=0, le=2)
    samples_per_task: int = Field(2, ge=1, le=8)
    max_steps: int = Field(MAX_STEPS, ge=1)
    """Turn limit when the teacher collects trajectories (evaluation uses ``eval.max_steps``)."""
    explore: float = Field(0.3, ge=0, le=1)
    temperature: float = Field(0.7, ge=0, le=2)
    adapter: str | None = None
    """An llm teacher's LoRA (a peft folder or a GGUF LoRA): a distilled student can teach a smaller one."""
    memory: str | None = None
    """An llm teacher's memory bank, read as a student reads it (``top_k`` memories, the bank's format)."""
    top_k: int = Field(RolloutSpec.model_fields["top_k"].default, ge=1, le=16)
    backend: Backend = RolloutSpec.model_fields["backend"].default
    """How an llm teacher's model runs (the run spec's backends); ``transformers`` with ``device: cuda`` and a
    ``batch`` plays many train games at once on a GPU."""
    device: str = RolloutSpec.model_fields["device"].default
    batch: int = Field(RolloutSpec.model_fields["batch"].default, ge=1)
    """transformers: the teacher's episodes stepped together."""

    @model_validator(mode="after")
    def _model_for_llm(self) -> TeacherConfig:
        if self.policy == "llm" and not self.model:
            raise ValueError("an llm teacher needs teacher.model")
        if self.policy == "expert":
            set_ = [name for name in ("model", "adapter", "memory") if getattr(self, name)]
            if set_ or self.backend != "auto" or self.batch != 1:
                raise ValueError("the expert teacher takes no model, adapter, memory, backend or batch "
                                 "(set teacher.policy: llm)")
        return self


EXPERT_MEMORY_WRITER = "qwen2.5-coder-1.5b"
"""Who writes the memories of the expert teacher (an oracle with no words of its own) unless told otherwise."""


class MemoryConfig(_Strict):
    teacher_writer: str | None = None
    """A model, or ``plan``: the deterministic writer that turns the teacher's own plan into steps (no model).
    Default: an LLM teacher writes its own memories (the paper); for the expert, ``qwen2.5-coder-1.5b``."""
    student_writer: str | None = None
    """Default: the student model itself (MemP-style self-memory)."""
    format: MemoryFormat = "both"
    """What the banks store: the writer's script, the reference actions, both, or both abstracted from their room
    (no instance numbers; room-specific places named by role)."""
    show_format: MemoryFormat | None = None
    """How retrieved memories are shown, at evaluation and in the LoRA data (None: the bank's format)."""
    copy_policy: CopyPolicy = "strip"
    """Written script lines that copy the writer prompt's wording: removed, or the memory left out."""
    train_exclude: Exclusion = "floor_plan"
    """What an SFT example may not retrieve: memories of its own game, its task (all trials), or its floor plan,
    so training looks like test time (valid_unseen shares no floor plan with the bank)."""
    embedder: str = "minilm"
    top_k: int = Field(2, ge=1, le=16)
    """Used when ``eval.k_sweep`` is empty."""
    retrieval: Retrieval = "similarity"
    """``similarity``: top-k by task-description similarity over the whole bank (the DuoMem paper);
    ``same_type``: top-k among memories of the task's type (used for evaluation and the LoRA data alike)."""
    games: int | None = Field(120, ge=1)
    """Train tasks (a seeded, type-balanced subset of the collected ones) that memories are written from."""

    def bank_fields(self) -> dict:
        """The settings that change what a bank holds (part of its stage's key; the writer of each bank enters on
        its own): the rest say how banks are used."""
        data = self.model_dump(exclude={"teacher_writer", "student_writer", "show_format", "train_exclude", "top_k",
                                        "retrieval"})
        return {"key_version": KEY_VERSION, **data}


class DataConfig(_Strict):
    source: Literal["alfworld", "generated", "scienceworld"] = "alfworld"
    """``scienceworld``: ScienceWorld's task lists (``duomem data prepare --env scienceworld``), splits train, dev
    (choices) and test; per-topic tables with mean scores in the report."""
    tasks: str | None = None
    """Folder of a task set with ``index/<split>.jsonl`` (default: the prepared ALFWorld sets, or ScienceWorld's)."""
    train_split: str = "train"
    train_games: int | None = Field(600, ge=1)
    """Train tasks the teacher plays (None: all)."""
    student_train_games: int | None = Field(120, ge=1)
    """Train tasks the student plays for its own memory."""
    eval_source: Literal["same", "alfworld"] = "same"
    """Where evaluation and tuning games come from: the same task set as training, or the official sets (e.g. to
    train on generated tasks and test on ALFWorld's)."""
    eval_split: str = "valid_unseen"
    eval_games: int | None = Field(None, ge=1)
    tune_split: str = "valid_seen"
    tune_games: int | None = Field(None, ge=1)
    generate_n: int = Field(600, ge=1)
    """With ``source: generated``: how many train tasks to generate (see ``duomem data generate``)."""
    generate_test_n: int = Field(0, ge=0)
    """With ``source: generated``: a test split on held-out floor plans (evaluate with ``eval_split: test``)."""

    @model_validator(mode="after")
    def _scienceworld_splits(self) -> DataConfig:
        if self.source == "scienceworld":
            from duomem.envs.scienceworld_data import SPLITS

            wrong = [f"{name}: {value}" for name in ("train_split", "eval_split", "tune_split")
                     if (value := getattr(self, name)) not in SPLITS]
            if wrong:
                raise ValueError(f"ScienceWorld's splits are {', '.join(SPLITS)} ({'; '.join(wrong)}): set "
                                 "train_split: train, eval_split: test, tune_split: dev")
            if self.eval_source != "same":
                raise ValueError("eval_source: alfworld does not go with source: scienceworld")
        return self


class LoraSettings(LoraConfig):
    """Every training setting of :class:`duomem.distill.train.LoraConfig` (defined there, with its defaults), plus
    what the pipeline does around training. The training seed is the pipeline's ``seed``. ``method: full`` trains
    every weight (the 95% recipe of LM-BUTLER) and exports a GGUF model (``quant``) that the rows play instead of
    base + adapter; it wants a lower ``learning_rate`` (1e-5 to 5e-5)."""

    quant: Quant = "q8_0"
    """``method: full``: the GGUF type the fine-tuned model is written as."""
    memory_dropout: float = Field(0.0, ge=0.0, le=1.0)
    """Share of teacher trajectories trained without the memory block (memory rows), so one adapter works with
    and without memories."""
    leave_out_types: list[TaskType] = Field(default_factory=list)
    """Task types the students never learn: their trajectories and their memories are left out of the SFT data,
    and the students' prompts show solved examples of another type in place of theirs (new kinds of task, met at
    play only through the bank, which keeps every type)."""
    device: str = "auto"
    """``auto``: cuda when torch sees a GPU, else cpu (not part of the stage key)."""
    keep_checkpoints: bool = False

    def training(self, seed: int) -> LoraConfig:
        """The training config, seeded with the pipeline's seed."""
        return LoraConfig(**{**self.model_dump(include=set(LoraConfig.model_fields)), "seed": seed})

    def key_fields(self) -> dict:
        """The settings that change what is trained (the training stage's key; the seed enters it on its own, the
        memory dropout through the SFT data; checkpointing and gradient checkpointing change nothing trained)."""
        data = self.model_dump(exclude={"device", "keep_checkpoints", "memory_dropout", "leave_out_types", "seed",
                                        "save_steps", "gradient_checkpointing"})
        if self.method != "full":
            data.pop("quant")
        return {"key_version": KEY_VERSION, **data}


class EvalConfig(_Strict):
    action_selection: ActionSelection = RolloutSpec.model_fields["action_selection"].default
    """How the student's answers become commands (the run spec's setting; see ``duomem eval --actions``)."""
    score_norm: ScoreNorm = RolloutSpec.model_fields["score_norm"].default
    """With ``action_selection: score``: the run spec's score norm."""
    max_steps: int = Field(RolloutSpec.model_fields["max_steps"].default, ge=1)
    loop_limit: int | None = Field(RolloutSpec.model_fields["loop_limit"].default, ge=2)
    """A student's episode ends, lost, at this many rounds of one word-for-word cycle of turns (the run spec's
    ``loop_limit``; None: only ``max_steps`` ends it)."""
    workers: int = Field(2, ge=1)
    threads: int | None = Field(None, ge=1)
    backend: Literal["llamacpp", "transformers"] = "llamacpp"
    device: str = "cpu"
    batch: int = Field(1, ge=1)
    """transformers backend: episodes stepped together, one batched generate per step."""
    k_sweep: list[int] = Field(default_factory=lambda: [1, 2, 4])
    """Top-k values tried on ``data.tune_split`` with the teacher memory; the best is used everywhere (a tie keeps
    ``memory.top_k``)."""
    history_windows: list[int] = Field(default_factory=list)
    """Extra DuoMem evaluations with only the last N turns in the prompt."""
    configs: list[str] = Field(default_factory=lambda: list(DEFAULT_CONFIGS))

    @model_validator(mode="after")
    def _known(self) -> EvalConfig:
        unknown = [c for c in self.configs if c not in CONFIG_NAMES]
        if unknown:
            raise ValueError(f"unknown configs {unknown}; choose from {list(CONFIG_NAMES)}")
        if any(k < 1 for k in self.k_sweep):
            raise ValueError("k_sweep values must be >= 1")
        return self


class PipelineConfig(_Strict):
    name: str = "duomem"
    output: str = "runs/duomem"
    seed: int = 0
    student: StudentConfig = Field(default_factory=StudentConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    memory: MemoryConfig = Field(default_factory=MemoryConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    lora: LoraSettings = Field(default_factory=LoraSettings)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _one_seed(self) -> PipelineConfig:
        if "seed" in self.lora.model_fields_set:
            raise ValueError("lora.seed is not a setting: the pipeline's seed (top level) seeds training too")
        if self.data.source == "scienceworld" and self.lora.leave_out_types:
            raise ValueError("lora.leave_out_types names ALFWorld's task types; ScienceWorld has no substitute "
                             "examples for a left-out task")
        return self

    @property
    def teacher_writer(self) -> str:
        """The model (or ``plan``) that writes the teacher's memories (see ``memory.teacher_writer``)."""
        if self.memory.teacher_writer:
            return self.memory.teacher_writer
        return self.teacher.model if self.teacher.policy == "llm" and self.teacher.model else EXPERT_MEMORY_WRITER


def _set_path(data: dict, dotted: str, raw: str) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def load_config(path: Path | None, overrides: list[str] = ()) -> PipelineConfig:
    """Read ``path`` (YAML), apply ``key.path=value`` overrides, validate; errors name the field and the reason."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping of settings")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.field=value")
        _set_path(data, key.strip(), value)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "config"
        raise ConfigError(f"invalid config: {where}: {err['msg']}") from exc
