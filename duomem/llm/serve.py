"""Serve a GGUF model (with a LoRA adapter, e.g. a distilled student) over an OpenAI-compatible HTTP API.

The server is llama-cpp-python's (``/v1/chat/completions``, ``/v1/completions`` with ``echo`` + ``logprobs`` for
``--actions score``, GBNF ``grammar`` for ``--actions grammar``), loaded with duomem's llama.cpp settings (weights
in plain CPU buffers under a LoRA or on a CPU with AMX, as :mod:`duomem.llm.llamacpp` loads them) and quiet
unless asked. Any duomem command then reaches it as ``openai:NAME@http://HOST:PORT/v1``, exactly like vLLM,
SGLang or a hosted API: this is how a teacher LLM is served for ``teacher.policy: llm`` on a machine without
another server.

``ModelServer`` runs it in a child process (tests, the pipeline's tooling); ``duomem serve`` in the foreground.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from duomem.errors import ModelError
from duomem.llm.registry import resolve

LOOPBACK = "127.0.0.1"
SERVER_MODULES = ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings")
"""What llama-cpp-python's server imports besides llama.cpp (``pip install 'llama-cpp-python[server]'``)."""


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def check_server_modules() -> None:
    import importlib.util

    missing = [m for m in SERVER_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelError(f"serving needs llama-cpp-python's server ({', '.join(missing)} missing): "
                         "pip install 'llama-cpp-python[server]'")


def server_args(model: str, adapter: Path | None = None, alias: str | None = None, host: str = LOOPBACK,
                port: int = 8000, n_ctx: int = 8192, threads: int | None = None,
                api_key: str | None = None) -> list[str]:
    """The arguments of ``python -m duomem.llm.serve`` (checked here: a model that resolves to a GGUF file, an
    adapter file that exists)."""
    ref = resolve(model)
    if ref.kind != "gguf" or ref.path is None:
        raise ModelError(f"only GGUF models can be served here, not {model}")
    if adapter is not None and not Path(adapter).is_file():
        raise ModelError(f"adapter file {adapter} does not exist; export one with `duomem distill export`")
    args = ["--model", str(ref.path), "--alias", alias or ref.name, "--host", host, "--port", str(port),
            "--n-ctx", str(n_ctx)]
    if adapter is not None:
        args += ["--lora", str(adapter)]
    if threads:
        args += ["--threads", str(threads)]
    if api_key:
        args += ["--api-key", api_key]
    return args


class ModelServer:
    """The server in a child process, on loopback by default; ``model_name`` is what duomem commands take."""

    def __init__(self, model: str, adapter: Path | None = None, alias: str | None = None, host: str = LOOPBACK,
                 port: int | None = None, n_ctx: int = 8192, threads: int | None = None,
                 api_key: str | None = None, log: Path | None = None, ready_timeout: float = 120.0) -> None:
        check_server_modules()
        self.port = port or free_port(host)
        self.alias = alias or resolve(model).name
        self.url = f"http://{host}:{self.port}/v1"
        self.api_key = api_key
        args = server_args(model, adapter, self.alias, host, self.port, n_ctx, threads, api_key)
        self._own_log = log is None
        if log is None:
            fd, name = tempfile.mkstemp(prefix="duomem-serve-", suffix=".log")
            os.close(fd)
            log = Path(name)
        self.log = log
        self._log_fh = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "duomem.llm.serve", *args], stdout=self._log_fh,
                                     stderr=subprocess.STDOUT)
        self._wait(ready_timeout)

    @property
    def model_name(self) -> str:
        """``openai:ALIAS@URL``: the model name any duomem command takes for this server."""
        return f"openai:{self.alias}@{self.url}"

    def _wait(self, timeout: float) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                said = " ".join(self.log.read_text().split())[-400:]
                raise ModelError(f"the model server exited before answering (exit {self.proc.returncode})"
                                 + (f": {said}" if said else ""))
            try:
                request = urllib.request.Request(f"{self.url}/models", headers=headers)
                with urllib.request.urlopen(request, timeout=2) as response:
                    if json.load(response)["data"]:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise ModelError(f"the model server did not answer within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._log_fh.close()
        if self._own_log:
            self.log.unlink(missing_ok=True)

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(model_path: Path, alias: str, host: str, port: int, n_ctx: int, lora: Path | None = None,
          threads: int | None = None, api_key: str | None = None, verbose: bool = False) -> None:
    """Run the server in this process until it is stopped (Ctrl-C, SIGTERM)."""
    import uvicorn
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    from duomem.llm.llamacpp import check_adapter, load_defaults, plain_weights_needed

    if lora is not None:
        check_adapter(model_path, lora)
    model = ModelSettings(model=str(model_path), model_alias=alias, n_ctx=n_ctx, seed=0, verbose=verbose,
                          lora_path=str(lora) if lora else None,
                          **({"n_threads": threads, "n_threads_batch": threads} if threads else {}))
    with load_defaults(n_seq_max=None, plain_weights=plain_weights_needed(lora is not None)):
        app = create_app(server_settings=ServerSettings(host=host, port=port, api_key=api_key),
                         model_settings=[model])
    uvicorn.run(app, host=host, port=port, log_level="info" if verbose else "warning")


def _main() -> None:
    parser = argparse.ArgumentParser(description="duomem's llama.cpp model server (see duomem serve)")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--alias", required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--lora", type=Path)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--api-key")
    args = parser.parse_args()
    serve(args.model, args.alias, args.host, args.port, args.n_ctx, args.lora, args.threads, args.api_key)


if __name__ == "__main__":
    _main()
