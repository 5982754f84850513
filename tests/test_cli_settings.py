"""The command line and the typed settings agree: every option that sets a spec field has the field's default and,
for a choice, exactly the field's choices (which --help lists)."""

from __future__ import annotations

import inspect
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from duomem.cli.distill import train_command
from duomem.cli.eval_cmd import collect_command, eval_command
from duomem.cli.main import app
from duomem.distill.train import LoraConfig
from duomem.eval.spec import RolloutSpec

pytestmark = pytest.mark.fast

RENAMED = {"actions": "action_selection", "lr": "learning_rate"}
"""CLI option name -> spec field, where they differ."""
MACHINE = {"device", "threads", "batch"}
"""Spec fields that are machine settings: the CLI leaves them unset (the spec's default applies)."""
COLLECT = {"policy": "expert", "explore": 0.3, "temperature": 0.7}
"""``duomem collect``'s own defaults: the teacher is the expert; samples after a game's first take detours (expert) or
sample (llm)."""


def _choices(annotation) -> set | None:
    """The values of a Literal annotation (inside Annotated and ``| None``), else None."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _choices(args[0]) if len(args) == 1 else None


@pytest.mark.parametrize(("command", "model"), [(eval_command, RolloutSpec), (collect_command, RolloutSpec),
                                                (train_command, LoraConfig)])
def test_cli_defaults_and_choices_are_the_specs(command: Callable, model: type[BaseModel]):
    hints = typing.get_type_hints(command, include_extras=True)
    checked = 0
    for name, param in inspect.signature(command).parameters.items():
        field = model.model_fields.get(RENAMED.get(name, name))
        if field is None or name in MACHINE:
            continue
        checked += 1
        default = COLLECT[name] if command is collect_command and name in COLLECT else \
            field.get_default(call_default_factory=True)
        if default == []:  # a list field: a comma-separated option, unset by default (checked by the spec)
            assert param.default is None, f"--{name}: CLI {param.default!r}, spec []"
            continue
        assert param.default == default, f"--{name}: CLI {param.default!r}, spec {field.default!r}"
        assert _choices(hints[name]) == _choices(field.annotation), f"--{name}: CLI and spec choices differ"
    assert checked >= 5


def test_help_lists_the_choices_and_a_wrong_one_is_one_line():
    runner = CliRunner(env={"COLUMNS": "200"})
    text = runner.invoke(app, ["eval", "--help"], terminal_width=200).output
    assert "free|grammar|score" in text and "similarity|same_type" in text
    wrong = runner.invoke(app, ["eval", "--actions", "best"], terminal_width=200)
    assert wrong.exit_code == 2 and "'free', 'grammar', 'score'" in wrong.output


def test_the_command_reference_is_current():
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, str(repo / "scripts" / "cli_docs.py")], capture_output=True, text=True,
                          check=True)
    assert done.stdout == (repo / "docs" / "cli.md").read_text(), \
        "docs/cli.md is stale: python scripts/cli_docs.py --out docs/cli.md"
