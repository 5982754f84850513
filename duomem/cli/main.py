"""The ``duomem`` command line."""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError
from rich.console import Console

from duomem.errors import DuomemError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Dual-space distillation of LLM agents: teacher memories + LoRA for small on-device students.")
console = Console(stderr=True)


def _register() -> None:
    from duomem.cli import data, distill, eval_cmd, memory, models, pipeline, report

    app.add_typer(data.app, name="data", help="Prepare ALFWorld task sets or generate new ones.")
    app.add_typer(models.app, name="models", help="List and check the packaged models.")
    app.add_typer(memory.app, name="memory", help="Build and query procedural-memory banks.")
    app.add_typer(distill.app, name="distill", help="LoRA distillation: SFT data, training, export.")
    app.command("eval")(eval_cmd.eval_command)
    app.command("collect")(eval_cmd.collect_command)
    app.command("report")(report.report_command)
    app.command("run")(pipeline.run_command)
    app.command("demo")(pipeline.demo_command)
    app.command("demo-pipeline")(pipeline.demo_pipeline_command)
    app.command("serve")(models.serve_command)


_register()


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app(standalone_mode=False)
    except DuomemError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "config"
        console.print(f"[red]error:[/red] invalid {where}: {first['msg']}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted; rerun the same command to resume")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):  # usage errors of click (or the click that typer vendors)
            show()
            sys.exit(code)
        raise

