"""LoRA adapters in llama.cpp's GGUF format and in peft's: the tensor names and the q/k row order of each, and the
import of a GGUF LoRA as a peft adapter (so a LoRA shipped as GGUF also plays on the transformers backend).
``duomem.distill.export`` writes the other direction."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import numpy as np

from duomem import settings
from duomem.errors import DataError, ModelError
from duomem.jsonl import atomic_write_json
from duomem.llm.registry import file_sha256, gguf_metadata, resolve

LORA_MODULES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
"""peft's module names -> llama.cpp's."""


def permute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order: (n_head, 2, half, cols) -> (n_head, half, 2, cols)."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2)
            .reshape(weight.shape))


def unpermute_rows(weight: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of :func:`permute_rows`: llama.cpp's q/k row order back to Hugging Face's."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, rows // n_head // 2, 2, *weight.shape[1:]).swapaxes(1, 2)
            .reshape(weight.shape))


def import_gguf_lora(path: Path, out: Path, base_model: str) -> dict:
    """Write a peft adapter folder ``out`` from the GGUF LoRA ``path`` (the inverse of
    :func:`duomem.distill.export.export_gguf_lora`), so a LoRA that exists only as GGUF (a shipped student's) plays
    on the transformers backend too. The tensors are the GGUF's (f16 where it stores f16); rank and alpha come from
    the file."""
    import gguf
    import torch
    from safetensors.torch import save_file

    path, out = Path(path), Path(out)
    ref = resolve(base_model)
    if ref.kind != "gguf" or ref.path is None:
        raise ModelError(f"a GGUF LoRA's base must be a GGUF model, not {base_model}")
    reader = gguf.GGUFReader(str(path))
    if "adapter.lora.alpha" not in reader.fields:
        raise DataError(f"{path} is not a GGUF LoRA (no adapter.lora.alpha)")
    arch = str(reader.fields["general.architecture"].contents())
    heads = gguf_metadata(ref.path, (f"{arch}.attention.head_count", f"{arch}.attention.head_count_kv"))
    n_head = int(heads.get(f"{arch}.attention.head_count", 0))
    n_head_kv = int(heads.get(f"{arch}.attention.head_count_kv", n_head))
    modules = {v: k for k, v in LORA_MODULES.items()}
    tensors, targets, rank = {}, set(), 0
    for t in reader.tensors:
        match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight\.lora_([ab])", t.name)
        if not match or match.group(2) not in modules:
            raise DataError(f"{path}: unexpected tensor {t.name}")
        layer, gguf_module, ab = match.groups()
        module = modules[gguf_module]
        array = np.array(t.data, dtype=np.float32).reshape([int(d) for d in reversed(t.shape)])
        if ab == "b" and arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
            array = unpermute_rows(array, n_head if module.endswith("q_proj") else n_head_kv)
        if ab == "a":
            rank = array.shape[0]
        tensors[f"base_model.model.model.layers.{layer}.{module}.lora_{ab.upper()}.weight"] = torch.from_numpy(array)
        targets.add(module.split(".")[-1])
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / "adapter_model.safetensors"))
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank,
              "lora_alpha": float(reader.fields["adapter.lora.alpha"].contents()), "lora_dropout": 0.0,
              "target_modules": sorted(targets), "bias": "none", "fan_in_fan_out": False,
              "base_model_name_or_path": base_model, "inference_mode": True}
    atomic_write_json(out / "adapter_config.json", config)
    atomic_write_json(out / "training.json", {"base_model": base_model, "imported_from": str(path)})
    return {"path": str(out), "tensors": len(tensors), "rank": rank, "alpha": config["lora_alpha"]}


def peft_folder_for(gguf_lora: Path, base_model: str) -> Path:
    """A peft copy of a GGUF LoRA, made once and kept in duomem's cache (keyed by the file's sha256)."""
    digest = hashlib.sha256(f"{file_sha256(Path(gguf_lora))}:{base_model}".encode()).hexdigest()[:16]
    out = settings.duomem_home() / "cache" / "peft-from-gguf" / digest
    if not (out / "adapter_config.json").is_file():
        tmp = out.with_name(f".{digest}.{os.getpid()}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        import_gguf_lora(gguf_lora, tmp, base_model)
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    return out
