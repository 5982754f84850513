"""``duomem distill``: SFT data from teacher trajectories, LoRA training, export for llama.cpp."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from duomem.cli import comma_list
from duomem.distill.export import LoraDtype, Quant
from duomem.distill.train import Method
from duomem.eval.spec import FewshotSet
from duomem.memory.bank import Exclusion, Retrieval
from duomem.memory.entry import MemoryFormat

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("dataset")
def dataset_command(
    trajectories: Annotated[Path, typer.Option(help="demonstrations.jsonl (or trajectories.jsonl) from `duomem collect`.")],
    out: Annotated[Path, typer.Option(help="Folder for train.jsonl and dataset.json.")],
    shots: Annotated[int, typer.Option(help="Few-shot examples in the prompt, as the agent will use.")] = 2,
    memory: Annotated[str | None, typer.Option(help="Memory bank whose retrieved memories go into the prompt.")] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Memories per example.")] = 2,
    retrieval: Annotated[Retrieval, typer.Option(help="similarity or same_type (see duomem eval --help).")]
    = "similarity",
    history_window: Annotated[int | None, typer.Option(help="Train with the last N turns only (default: full).")] = None,
    model: Annotated[str | None, typer.Option(help="Also count masked/trained tokens with this model's tokenizer.")] = None,
    exclude: Annotated[Exclusion, typer.Option(help="Memories a training example may not retrieve: those of its game, "
                                              "task (folder) or floor_plan (as at test time, where the rooms "
                                              "are new).")] = "floor_plan",
    memory_dropout: Annotated[float, typer.Option(help="Share of trajectories trained without the memory block "
                                                       "(seeded), so the adapter works with and without "
                                                       "memories.")] = 0.0,
    dropout_seed: Annotated[int, typer.Option(help="Seed that picks the trajectories without memories.")] = 0,
    memory_format: Annotated[MemoryFormat | None, typer.Option(help="How memories are shown (default: the bank's "
                                                                    "format; see duomem eval --help).")] = None,
    fewshot: Annotated[FewshotSet, typer.Option(help="Few-shot example set the prompts show: train or heldout (as the "
                                              "evaluation will use); its games are left out.")] = "train",
    note: Annotated[bool, typer.Option("--note/--no-note", help="Write the episodic note under each game answer "
                                                                "(as `duomem eval --note` plays).")] = False,
    leave_out_types: Annotated[str | None, typer.Option(help="Comma-separated task types the student must not "
                                                             "learn: their trajectories and their memories are "
                                                             "left out (new kinds of task, met only through "
                                                             "memories).")] = None,
    fewshot_swap: Annotated[float, typer.Option(help="Share of trajectories (seeded) whose prompts show solved "
                                                     "examples of another task type, as a kind of task the "
                                                     "student never learned is played (duomem eval "
                                                     "--unseen-types): the student learns to take the procedure "
                                                     "from the memories.")] = 0.0,
) -> None:
    """Turn won trajectories into chat examples in the agent's exact prompt format."""
    from duomem.distill.dataset import build_dataset, load_examples

    meta = build_dataset(trajectories, out, shots=shots, memory=memory, top_k=top_k, history_window=history_window,
                         retrieval=retrieval, exclude=exclude, memory_dropout=memory_dropout,
                         dropout_seed=dropout_seed, memory_format=memory_format, fewshot=fewshot, note=note,
                         leave_out_types=comma_list(leave_out_types or ""),
                         fewshot_swap=fewshot_swap)
    console.print(f"{meta['examples']} examples from {meta['trajectories']} won trajectories -> {out}"
                  + (f" ({meta['trajectories_without_memory']} without memories)"
                     if 'trajectories_without_memory' in meta else ""))
    if model:
        from duomem.distill.tokenize import tokenize_examples
        from duomem.llm.hf import load_hf

        bundle = load_hf(model)
        total = trained = 0
        for ex in tokenize_examples(bundle, load_examples(out)):
            total += len(ex.input_ids)
            trained += ex.trained_tokens
        console.print(f"tokens: {total} in all, {trained} trained (assistant turns), {total - trained} masked")


@app.command("train")
def train_command(
    model: Annotated[str, typer.Option(help="Student model (a packaged GGUF name or hf:ORG/NAME).")],
    data: Annotated[Path, typer.Option(help="Folder from `duomem distill dataset`.")],
    out: Annotated[Path, typer.Option(help="Adapter folder (peft) with checkpoints; rerun to resume.")],
    method: Annotated[Method, typer.Option(help="lora (a peft adapter) or full (every weight; use --lr 1e-5 to 5e-5 "
                                             "and export the model with duomem distill export).")] = "lora",
    rank: Annotated[int, typer.Option(help="LoRA rank.")] = 16,
    alpha: Annotated[int | None, typer.Option(help="LoRA alpha (default 2 x rank).")] = None,
    epochs: Annotated[float, typer.Option(help="Epochs.")] = 2.0,
    max_steps: Annotated[int | None, typer.Option(help="Stop after N optimiser steps.")] = None,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 2e-4,
    batch_size: Annotated[int, typer.Option(help="Examples per device step.")] = 4,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    max_length: Annotated[int, typer.Option(help="Longest example in tokens (longer ones are skipped).")] = 4096,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps.")] = 50,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    gradient_checkpointing: Annotated[bool, typer.Option(help="Trade compute for memory.")] = False,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    nproc: Annotated[int, typer.Option(help="Processes (GPUs) for data-parallel training via torchrun.")] = 1,
    group_by_length: Annotated[bool, typer.Option(help="Batch examples of similar length (little padding).")]
    = True,
    stop_after: Annotated[float | None, typer.Option(help="Save a checkpoint and stop after N seconds; the same "
                                                          "command continues (training in pieces that fit a time "
                                                          "limit).")] = None,
) -> None:
    """LoRA (or full) fine-tuning with transformers + peft; resumable from checkpoints."""
    from duomem.distill.train import LoraConfig, train_lora, trainable_summary

    config = LoraConfig(method=method, rank=rank, alpha=alpha, epochs=epochs, max_steps=max_steps, learning_rate=lr,
                        batch_size=batch_size, grad_accum=grad_accum, max_length=max_length, save_steps=save_steps,
                        gradient_checkpointing=gradient_checkpointing, seed=seed, group_by_length=group_by_length)
    if nproc > 1:
        from duomem.distill.launch import launch_distributed

        launch_distributed(model, data, out, config, device, nproc)
        return
    meta = train_lora(model, data, out, config, device=device, threads=threads, stop_after_s=stop_after)
    if not meta["finished"]:
        console.print(f"stopped at step {meta['steps']} of {meta['max_steps']} after {meta['wall_s']:.0f}s; rerun "
                      "the same command to continue")
        return
    console.print(f"{'model' if method == 'full' else 'adapter'} in {out}: {trainable_summary(meta)}")


@app.command("export")
def export_command(
    adapter: Annotated[Path, typer.Option(help="peft adapter folder, or the folder of a full fine-tune.")],
    out: Annotated[Path | None, typer.Option(help="GGUF file (default <adapter>/adapter.gguf, or model.gguf for "
                                                  "a full fine-tune).")] = None,
    base_model: Annotated[str | None, typer.Option(help="Base model (default: from training.json).")] = None,
    dtype: Annotated[LoraDtype, typer.Option(help="LoRA tensors: f16, f32 or q8_0 (lora_a at q8_0, lora_b f16).")] = "f16",
    quant: Annotated[Quant, typer.Option(help="Full fine-tune: f16, q8_0, q4_1 or q4_k_m.")] = "q8_0",
) -> None:
    """Write a LoRA in llama.cpp's GGUF LoRA format (Llama(model_path=base, lora_path=...)), or a fully
    fine-tuned model as a GGUF model (duomem eval --model <file>.gguf)."""
    from duomem.distill.export import MODEL_GGUF, MODEL_WEIGHTS, export_gguf_lora, export_gguf_model

    if (adapter / MODEL_WEIGHTS).is_file():
        info = export_gguf_model(adapter, out or adapter / MODEL_GGUF, base_model=base_model, quant=quant)
        console.print(f"wrote {info['path']}: {info['tensors']} tensors ({info['quant']}), "
                      f"{info['bytes'] / 1e6:.1f} MB ({info['arch']}, base {info['base_model']})")
        return
    info = export_gguf_lora(adapter, out or adapter / "adapter.gguf", base_model=base_model, dtype=dtype)
    console.print(f"wrote {info['path']}: {info['tensors']} tensors, {info['bytes'] / 1e6:.1f} MB "
                  f"({info['arch']}, base {info['base_model']})")
