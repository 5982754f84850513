"""Export a peft LoRA adapter to llama.cpp's GGUF LoRA format, so the on-device llama.cpp student runs it.

Tensor names follow llama.cpp (``blk.N.attn_q.weight.lora_a``/``lora_b``). For the llama architecture, llama.cpp
stores q/k weights with their rotary halves interleaved differently from Hugging Face; the same row permutation is
applied to ``lora_b`` of q and k so that B @ A matches the permuted base weight.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Literal

import numpy as np

from duomem.errors import ConfigError, DataError, ModelError
from duomem.llm.lora_gguf import LORA_MODULES, permute_rows
from duomem.llm.registry import gguf_metadata, resolve

_NAME = re.compile(r"layers\.(\d+)\.(.+)\.lora_([AB])\.weight$")


LoraDtype = Literal["f16", "f32", "q8_0"]
"""How LoRA tensors are stored: f16, f32, or q8_0 (the ``lora_a`` tensors, whose rows are a layer's width; ``lora_b``'s
rows are the rank, shorter than a q8_0 block of 32, and stay f16): about a third smaller than f16."""


def export_gguf_lora(adapter_dir: Path, out: Path, base_model: str | None = None, dtype: LoraDtype = "f16") -> dict:
    """Write ``out`` (a GGUF LoRA) from the peft folder ``adapter_dir``; returns size and tensor count."""
    import gguf
    import gguf.quants
    from safetensors.numpy import load_file

    adapter_dir, out = Path(adapter_dir), Path(out)
    cfg_path = adapter_dir / "adapter_config.json"
    weights_path = adapter_dir / "adapter_model.safetensors"
    if not cfg_path.is_file() or not weights_path.is_file():
        raise DataError(f"{adapter_dir} is not a peft adapter (adapter_config.json + adapter_model.safetensors)")
    cfg = json.loads(cfg_path.read_text())
    base_name = base_model or _base_name(adapter_dir, cfg)
    ref = resolve(base_name)
    if ref.kind != "gguf" or ref.path is None:
        raise ModelError(f"GGUF export needs a GGUF base model, not {base_name}")
    arch = str(gguf_metadata(ref.path, ("general.architecture",))["general.architecture"])
    heads = gguf_metadata(ref.path, (f"{arch}.attention.head_count", f"{arch}.attention.head_count_kv"))
    n_head = int(heads.get(f"{arch}.attention.head_count", 0))
    n_head_kv = int(heads.get(f"{arch}.attention.head_count_kv", n_head))
    tensors = load_file(str(weights_path))
    np_dtype = np.float32 if dtype == "f32" else np.float16
    q8 = gguf.GGMLQuantizationType.Q8_0
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")  # renamed once whole: a reader never sees a part
    writer = gguf.GGUFWriter(str(tmp), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(cfg.get("lora_alpha", cfg.get("r", 1))))
    written = 0
    for name in sorted(tensors):
        match = _NAME.search(name)
        if not match:
            raise DataError(f"unexpected tensor {name} in {weights_path}; only LoRA on attention/MLP projections "
                            "can be exported")
        layer, module, ab = match.groups()
        if module not in LORA_MODULES:
            raise DataError(f"LoRA on {module} cannot be exported to llama.cpp")
        array = tensors[name].astype(np.float32)
        if ab == "B" and arch == "llama" and module in ("self_attn.q_proj", "self_attn.k_proj"):
            array = permute_rows(array, n_head if module.endswith("q_proj") else n_head_kv)
        tensor_name = f"blk.{layer}.{LORA_MODULES[module]}.weight.lora_{ab.lower()}"
        if dtype == "q8_0" and array.shape[-1] % gguf.GGML_QUANT_SIZES[q8][0] == 0:
            writer.add_tensor(tensor_name, gguf.quants.quantize(array, q8), raw_dtype=q8)
        else:
            writer.add_tensor(tensor_name, array.astype(np_dtype))
        written += 1
    out.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return {"path": str(out), "bytes": out.stat().st_size, "tensors": written, "base_model": base_name, "arch": arch}


def _base_name(adapter_dir: Path, cfg: dict) -> str:
    meta = adapter_dir / "training.json"
    if meta.is_file():
        return json.loads(meta.read_text())["base_model"]
    raise ModelError(f"cannot tell the base model of {adapter_dir}; pass --base-model")


def ensure_gguf_adapter(adapter: str | Path) -> Path:
    """The GGUF LoRA for ``adapter``: the file itself, or ``adapter.gguf`` inside a peft folder, exported once
    (an explicit, cached step: loading a model never writes files)."""
    adapter = Path(adapter)
    if adapter.is_file():
        return adapter
    exported = adapter / "adapter.gguf"
    if adapter.is_dir() and not exported.is_file():
        export_gguf_lora(adapter, exported)
    return exported


Quant = Literal["f16", "q8_0", "q4_1", "q4_k_m"]
QUANTS = {"f16": 1, "q8_0": 7, "q4_1": 3, "q4_k_m": 15}
"""GGUF file types a fully fine-tuned model can be written as (llama.cpp's ``LLAMA_FTYPE_MOSTLY_*``)."""
MODEL_WEIGHTS = "model.safetensors"
MODEL_GGUF = "model.gguf"


def export_gguf_model(model_dir: Path, out: Path, base_model: str | None = None, quant: Quant = "q8_0",
                      threads: int | None = None) -> dict:
    """Write ``out``, a GGUF model of a fully fine-tuned student (``model_dir/model.safetensors`` from
    ``duomem distill train --method full``), for llama.cpp.

    The base model's GGUF is the template: its metadata (tokenizer, chat template, hyper-parameters) is copied and
    each of its tensors is replaced by the fine-tuned weight of the same name (Hugging Face names mapped with
    gguf's tensor map; q/k rows permuted for the llama architecture, as for the LoRA), written as f16 (norms f32) or
    q8_0 with gguf's own quantiser (no llama.cpp needed, so a GPU machine without it can export; q8_0 keeps the
    fine-tune's precision: 145 MB for the 135M student), or quantised from f16 to q4_1/q4_k_m by llama.cpp."""
    import gguf
    import gguf.quants
    from safetensors.torch import load_file

    model_dir, out = Path(model_dir), Path(out)
    if quant not in QUANTS:
        raise ConfigError(f"unknown quantisation {quant!r}; choose from {', '.join(QUANTS)}")
    weights = model_dir / MODEL_WEIGHTS
    if not weights.is_file():
        raise DataError(f"{model_dir} holds no fully fine-tuned model ({MODEL_WEIGHTS}); train one with "
                        "`duomem distill train --method full`")
    base_name = base_model or _base_name(model_dir, {})
    ref = resolve(base_name)
    if ref.kind != "gguf" or ref.path is None:
        raise ModelError(f"GGUF export needs a GGUF base model, not {base_name}")
    base = gguf.GGUFReader(str(ref.path))
    arch = str(base.fields["general.architecture"].contents())
    n_blocks = int(base.fields[f"{arch}.block_count"].contents())
    n_head = int(base.fields[f"{arch}.attention.head_count"].contents())
    n_head_kv = int(base.fields[f"{arch}.attention.head_count_kv"].contents()) \
        if f"{arch}.attention.head_count_kv" in base.fields else n_head
    names = gguf.get_tensor_name_map(next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch), n_blocks)
    tuned: dict[str, np.ndarray] = {}
    for hf_name, tensor in load_file(str(weights)).items():
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise DataError(f"{weights}: no llama.cpp name for tensor {hf_name}")
        tuned[name] = tensor.float().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    direct = quant in ("f16", "q8_0")  # written here with gguf's own quantiser; the k-quants need llama.cpp's
    f16 = out if direct else out.with_name(out.stem + ".f16.gguf")
    writer = gguf.GGUFWriter(str(f16), arch)
    for field in base.fields.values():
        if field.name.startswith("GGUF.") or field.name in ("general.architecture", "general.file_type"):
            continue
        kind = field.types[0]
        writer.add_key_value(field.name, field.contents(), kind,
                             field.types[1] if kind == gguf.GGUFValueType.ARRAY else None)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    q8 = gguf.GGMLQuantizationType.Q8_0
    for info in base.tensors:
        if info.name not in tuned:
            raise DataError(f"{weights} has no weight for the base model's tensor {info.name}")
        array = tuned[info.name]
        if arch == "llama" and info.name.endswith(("attn_q.weight", "attn_k.weight")):
            array = permute_rows(array, n_head if "attn_q" in info.name else n_head_kv)
        if array.shape != tuple(int(d) for d in reversed(info.shape)):
            raise DataError(f"{weights}: {info.name} has shape {array.shape}, the base model's is "
                            f"{tuple(int(d) for d in reversed(info.shape))}")
        if quant == "q8_0" and array.ndim > 1 and array.shape[-1] % gguf.GGML_QUANT_SIZES[q8][0] == 0:
            writer.add_tensor(info.name, gguf.quants.quantize(array.astype(np.float32), q8), raw_dtype=q8)
        else:
            writer.add_tensor(info.name, array.astype(np.float16 if array.ndim > 1 else np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    if not direct:
        import os

        import llama_cpp

        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = QUANTS[quant]
        params.nthread = threads or os.cpu_count() or 1
        if llama_cpp.llama_model_quantize(str(f16).encode(), str(out).encode(), params) != 0:
            raise ModelError(f"llama.cpp could not quantise {f16} to {quant}")
        f16.unlink()
    return {"path": str(out), "bytes": out.stat().st_size, "tensors": len(base.tensors), "base_model": base_name,
            "arch": arch, "quant": quant}
