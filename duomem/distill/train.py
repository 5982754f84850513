"""Fine-tuning of a student on SFT chat data with transformers (+ peft for LoRA), CPU or CUDA, resumable.

The base weights come from the same packaged GGUF the llama.cpp backend runs (transformers dequantises it), so the
adapter matches the on-device student. Checkpoints go to ``<out>/checkpoints``; rerunning the same command resumes
from the last one. The result is a standard peft adapter folder plus ``training.json``, or with ``method: full``
(every weight trained, the recipe of the 95% ALFWorld result for a 345M model) the whole model's weights
(``model.safetensors``), which :func:`duomem.distill.export.export_gguf_model` turns into a GGUF model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from duomem import settings
from duomem.errors import ConfigError, DataError, TrainingError
from duomem.jsonl import atomic_write_json

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TRAINING_META = "training.json"


Method = Literal["lora", "full"]
"""``lora``: a peft adapter; ``full``: every weight."""


class LoraConfig(BaseModel):
    """LoRA and optimisation settings (the paper: rank 8-32 with alpha = 2 x rank)."""

    model_config = ConfigDict(extra="forbid")

    method: Method = "lora"
    """``lora``: a peft adapter on ``targets``; ``full``: every weight is trained (use a learning rate around
    1e-5 to 5e-5; rank, alpha, dropout and targets do not apply)."""
    rank: int = Field(16, ge=1, le=256)
    alpha: int | None = Field(None, ge=1)
    """Default: 2 x rank."""
    dropout: float = Field(0.05, ge=0, lt=1)
    targets: tuple[str, ...] = LORA_TARGETS
    epochs: float = Field(2.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    learning_rate: float = Field(2e-4, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(4096, ge=128)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    save_steps: int = Field(50, ge=1)
    seed: int = 0
    gradient_checkpointing: bool = False
    group_by_length: bool = True
    """Batch examples of similar length together (shuffled in groups), so a batch carries little padding: on a
    GPU most of the compute of random batches went to padding."""

    @property
    def lora_alpha(self) -> int:
        return self.alpha or 2 * self.rank


LIBRARY_NOISE = (
    (FutureWarning, "`is_gradient_checkpointing` is deprecated"),
    # peft reads a property that transformers 5 renamed
    (UserWarning, "Could not find a config file in"),
    # peft, saving the adapter (and each checkpoint), looks for the base model's config.json to see whether the
    # vocabulary changed; a packaged GGUF has none beside it, and LoRA on the projections leaves the vocabulary alone
)
"""Library warnings a user cannot act on: (category, start of the message), silenced exactly these, only while
training."""


@contextmanager
def _quiet_libraries() -> Iterator[None]:
    with warnings.catch_warnings():
        for category, message in LIBRARY_NOISE:
            warnings.filterwarnings("ignore", message=re.escape(message), category=category)
        yield


def _data_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _hardware(device: str) -> str:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"CPU {platform.machine()}, {torch.get_num_threads()} threads"


class _ExamplesDataset:
    def __init__(self, rows: list[dict]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


def trained_token_loss(model, inputs: dict, num_items_in_batch=None):
    """The causal-LM loss computed on the trained (assistant) tokens alone: the output layer runs only where a
    label is kept, not over every position of the batch. For this project's data about one token in ten is
    trained, and the 49k-word output layer of a small model is a large share of its compute and most of its
    memory (logits for every position of a long batch), so this is the same loss at a fraction of the cost.
    Normalised as the model's own loss is: summed, divided by ``num_items_in_batch`` (the trained tokens of the
    whole accumulated batch) when given, else by this batch's trained tokens."""
    import torch.nn.functional as F

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])[0]
    labels = inputs["labels"][:, 1:]
    keep = labels != -100
    logits = base.get_output_embeddings()(hidden[:, :-1][keep]).float()
    loss = F.cross_entropy(logits, labels[keep], reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else keep.sum().clamp(min=1)
    return loss / count


def _trainer_class(world_size: int):
    """transformers' Trainer, with :func:`trained_token_loss` in one process (several processes keep the model's
    own loss: their gradients are synchronised by the wrapped model's forward)."""
    from transformers import Trainer

    if world_size > 1:
        return Trainer

    class TrainedTokenTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss = trained_token_loss(model, inputs, num_items_in_batch)
            return (loss, None) if return_outputs else loss

    return TrainedTokenTrainer


def _collate(pad_id: int):
    import torch

    def collate(batch: list[dict]) -> dict:
        width = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), -100, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, b in enumerate(batch):
            n = len(b["input_ids"])
            ids[row, :n] = torch.tensor(b["input_ids"])
            labels[row, :n] = torch.tensor(b["labels"])
            mask[row, :n] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    return collate


def _stopper(seconds: float | None):
    """A callback that saves a checkpoint and ends training once ``seconds`` have passed (None: never)."""
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def __init__(self) -> None:
            self.start = time.perf_counter()
            self.stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            if seconds is not None and time.perf_counter() - self.start > seconds and state.global_step < state.max_steps:
                control.should_save = control.should_training_stop = True
                self.stopped = True
            return control

    return StopAfter()


def _finite_guard():
    """A callback that ends training, saving nothing more, at the first logged loss or gradient norm that is not
    finite (the step's update has already made the weights NaN; the last checkpoint is from before it)."""
    from transformers import TrainerCallback

    class FiniteGuard(TrainerCallback):
        def __init__(self) -> None:
            self.bad: str | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            for key in ("loss", "grad_norm"):
                value = (logs or {}).get(key)
                if self.bad is None and value is not None and not math.isfinite(float(value)):
                    self.bad = f"{key} {value} at step {state.global_step}"
            if self.bad:
                control.should_save = False
                control.should_training_stop = True
            return control

    return FiniteGuard()


def train_lora(model_name: str, data: Path, out: Path, config: LoraConfig, device: str = "cpu",
               threads: int | None = None, show_progress: bool = True, stop_after_s: float | None = None) -> dict:
    """Train (or resume training) a LoRA adapter, or with ``config.method`` ``full`` the whole model; returns the
    ``training.json`` facts. ``show_progress``: transformers' progress bar of the training steps.
    ``stop_after_s``: save a checkpoint and stop after this many seconds (the same call continues it; the
    returned facts then say ``finished: False`` and no adapter is written yet), so a long training runs in pieces
    that each fit a time limit."""
    import torch
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model
    from transformers import TrainingArguments, set_seed
    from transformers.trainer_utils import get_last_checkpoint

    from duomem.distill.dataset import META_FILE, TRAIN_FILE, load_examples
    from duomem.distill.tokenize import tokenize_examples
    from duomem.llm.hf import load_hf

    data, out = Path(data), Path(out)
    train_file = data / TRAIN_FILE if data.is_dir() else data
    if not train_file.is_file():
        raise DataError(f"no SFT data at {train_file}; make it with `duomem distill dataset`")
    if threads:
        torch.set_num_threads(threads)
    data_hash = _data_hash(train_file)
    run_key = {"model": model_name, "data_sha256": data_hash, "config": config.model_dump(mode="json")}
    key_path = out / "train_config.json"
    if key_path.is_file() and json.loads(key_path.read_text()) != run_key:
        raise ConfigError(f"{out} holds training with other data or settings; use another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    if settings.distributed_rank()[0] == 0:
        atomic_write_json(key_path, run_key)

    set_seed(config.seed)
    bundle = load_hf(model_name, device=device, for_training=True)
    examples = load_examples(train_file)
    rows, skipped, tokens, trained = [], 0, 0, 0
    cores = max(1, (os.cpu_count() or 1) // settings.distributed_rank()[1])
    for ex in tokenize_examples(bundle, examples, workers=cores):
        if len(ex.input_ids) > config.max_length:
            skipped += 1
            continue
        rows.append({"input_ids": ex.input_ids, "labels": ex.labels})
        tokens += len(ex.input_ids)
        trained += ex.trained_tokens
    if not rows:
        raise DataError(f"every example is longer than --max-length {config.max_length}")

    full = config.method == "full"
    if full:
        model = bundle.model
    else:
        peft_config = PeftLoraConfig(r=config.rank, lora_alpha=config.lora_alpha, lora_dropout=config.dropout,
                                     target_modules=list(config.targets), task_type="CAUSAL_LM", bias="none")
        with _quiet_libraries():
            model = get_peft_model(bundle.model, peft_config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if config.gradient_checkpointing and not full:
        model.enable_input_require_grads()
    cuda = device.startswith("cuda")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        # cuDNN's attention backward (SDPA's default on H100/H200 from torch 2.11) returns NaN query gradients
        # when an attention mask is passed, the padded batch is 64 past a multiple of 128 wide and a row's
        # logsumexp is very negative, as Qwen2.5's massive-activation heads make it (pytorch/pytorch#196678):
        # the 0.5B student's LoRA went NaN at step 67 of its first training. The other kernels are exact.
        torch.backends.cuda.enable_cudnn_sdp(False)
    # transformers 5 renamed gradient_checkpointing (the old name warns); older versions know only the old one
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    checkpointing = "activation_checkpointing" if "activation_checkpointing" in known else "gradient_checkpointing"
    if "train_sampling_strategy" in known:  # transformers 5 names the length-grouped sampler this way
        sampling = {"train_sampling_strategy": "group_by_length" if config.group_by_length else "random"}
    else:
        sampling = {"group_by_length": config.group_by_length}
    world = settings.distributed_rank()[1]
    per_epoch = math.ceil(math.ceil(len(rows) / (config.batch_size * world)) / config.grad_accum)
    warmup = math.ceil(config.warmup_ratio * (config.max_steps or math.ceil(per_epoch * config.epochs)))
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"), per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1, learning_rate=config.learning_rate, lr_scheduler_type="cosine",
        warmup_steps=warmup, logging_steps=1, save_steps=config.save_steps, save_total_limit=2,
        report_to=[], seed=config.seed, data_seed=config.seed, bf16=cuda and torch.cuda.is_bf16_supported(),
        use_cpu=not cuda, dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=not show_progress, ddp_find_unused_parameters=False, **sampling,
        **{checkpointing: config.gradient_checkpointing},
    )
    stopper, guard = _stopper(stop_after_s), _finite_guard()
    trainer = _trainer_class(world)(model=model, args=args, train_dataset=_ExamplesDataset(rows),
                                    data_collator=_collate(bundle.tokenizer.pad_token_id), callbacks=[stopper, guard])
    last = get_last_checkpoint(str(out / "checkpoints")) if (out / "checkpoints").is_dir() else None
    start = time.perf_counter()
    with _quiet_libraries():
        result = trainer.train(resume_from_checkpoint=last)
        wall = time.perf_counter() - start
        if guard.bad:
            raise TrainingError(f"training diverged ({guard.bad}); nothing was saved from that step on. Lower "
                                f"--lr, or delete {out / 'checkpoints'} to start again")
        if stopper.stopped:
            return {"finished": False, "steps": trainer.state.global_step, "max_steps": trainer.state.max_steps, "wall_s": wall,
                    "train_tokens_per_s": None}
        if trainer.is_world_process_zero():
            model.save_pretrained(str(out))  # full: config.json + model.safetensors; lora: the peft adapter
    steps_done = trainer.state.global_step
    losses = [{"step": h["step"], "loss": round(h["loss"], 5)} for h in trainer.state.log_history if "loss" in h]
    epochs_run = float(result.metrics.get("epoch", config.epochs))
    tokens_seen = int(tokens * epochs_run)
    meta = {
        "finished": True,
        "base_model": model_name,
        "data": str(train_file),
        "data_sha256": data_hash,
        "dataset": json.loads((train_file.parent / META_FILE).read_text()) if (train_file.parent / META_FILE).is_file() else None,
        "examples": len(rows),
        "skipped_too_long": skipped,
        "tokens_per_epoch": tokens,
        "trained_tokens_per_epoch": trained,
        "epochs": epochs_run,
        "steps": steps_done,
        "resumed_from": last,
        "trainable_params": trainable,
        "total_params": total,
        "method": config.method,
        "rank": None if full else config.rank,
        "alpha": None if full else config.lora_alpha,
        "targets": None if full else list(config.targets),
        "device": device,
        "world_size": settings.distributed_rank()[1],
        "hardware": _hardware(device),
        "wall_s": wall,
        "train_tokens_per_s": tokens_seen / wall if wall > 0 and not last else None,
        "loss_first": losses[0]["loss"] if losses else None,
        "loss_last": losses[-1]["loss"] if losses else None,
        "loss_curve": losses,
        "config": config.model_dump(mode="json"),
        "adapter_bytes": sum(f.stat().st_size for f in out.glob("model.safetensors" if full
                                                                   else "adapter_model.*")),
    }
    if trainer.is_world_process_zero():
        atomic_write_json(out / TRAINING_META, meta)
    return meta


def trainable_summary(meta: dict[str, Any]) -> str:
    return (f"{meta['trainable_params'] / 1e6:.2f}M trainable of {meta['total_params'] / 1e6:.0f}M, "
            f"{meta['steps']} steps, loss {meta['loss_first']} -> {meta['loss_last']}, "
            f"{meta['wall_s']:.0f}s on {meta['hardware']}")
