"""The DuoMem pipeline: configuration, stage caching and (slow) the whole run end to end (the report: test_report.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

from duomem.errors import ConfigError
from duomem.pipeline.config import load_config
from duomem.pipeline.stages import StageRunner


def test_config_defaults_and_overrides(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("name: x\nstudent: {model: smollm2-135m}\n")
    cfg = load_config(path, ["eval.workers=4", "eval.k_sweep=[1, 3]", "teacher.policy=expert"])
    assert cfg.name == "x" and cfg.eval.workers == 4 and cfg.eval.k_sweep == [1, 3]
    assert cfg.eval.configs == ["nomem", "own_memory", "teacher_memory", "lora_own_memory", "duomem", "teacher"]


@pytest.mark.parametrize(("success", "default", "chosen"), [
    ({1: 0.1, 2: 0.3, 4: 0.2}, 2, 2),
    ({1: 0.4, 2: 0.3, 4: 0.4}, 2, 1),
    ({1: 0.0, 2: 0.0, 4: 0.0}, 2, 2),
    ({1: 0.0, 4: 0.0}, 2, 1),
])
def test_k_choice_keeps_the_default_on_ties(success: dict[int, float], default: int, chosen: int):
    from duomem.pipeline.run import choose_k

    assert choose_k(success, default) == chosen


@pytest.mark.parametrize(("text", "overrides", "message"), [
    ("student: {modle: x}\n", [], "student.modle: Extra inputs"),
    ("lora: {rank: 0}\n", [], "lora.rank"),
    ("eval: {configs: [nomem, magic]}\n", [], "unknown configs"),
    ("teacher: {policy: llm}\n", [], "llm teacher needs teacher.model"),
    ("[1, 2]\n", [], "mapping"),
    ("a: [\n", [], "not valid YAML"),
    ("", ["eval.workers"], "section.field=value"),
    ("", ["eval.workers=-1"], "eval.workers"),
])
def test_invalid_configs_fail_before_work(tmp_path: Path, text: str, overrides: list[str], message: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path, overrides)


def test_missing_config_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.yaml")


@pytest.mark.parametrize("args, message", [
    (["data", "generate", "--out", "x", "--n", "1", "--no-such-flag"], "No such option: --no-such-flag"),
    (["run", "{missing}"], "does not exist"),
    (["eval", "--policy", "llm", "--model", "smollm2-135m", "--retrieval", "nearest", "--games", "1"], "retrieval"),
])
def test_cli_errors_are_one_clear_line(tmp_path: Path, args: list[str], message: str):
    args = [a.format(missing=tmp_path / "none.yaml") for a in args]
    done = subprocess.run([sys.executable, "-m", "duomem.cli", *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_stage_caching(tmp_path: Path):
    calls: list[str] = []

    def work(tag: str):
        def fn(d: Path) -> dict:
            calls.append(tag)
            (d / "out.txt").write_text(tag)
            return {"tag": tag}
        return fn

    runner = StageRunner(tmp_path)
    first = runner.run("s", {"a": 1}, work("one"))
    again = StageRunner(tmp_path).run("s", {"a": 1}, work("two"))
    assert calls == ["one"] and again.cached and again.info == {"tag": "one"} and again.path == first.path
    other = StageRunner(tmp_path).run("s", {"a": 2}, work("three"))
    assert calls == ["one", "three"] and other.path != first.path
    dry = StageRunner(tmp_path, dry=True)  # --report-only: runs nothing
    assert dry.run("s", {"a": 1}, work("four")).info == {"tag": "one"}
    with pytest.raises(ConfigError, match="has not finished"):
        dry.run("s", {"a": 3}, work("five"))
    assert not dry.run("s", {"a": 3}, work("six"), partial_ok=True).finished and calls == ["one", "three"]


def test_interrupted_stage_is_entered_again(tmp_path: Path):
    def crash(d: Path) -> dict:
        (d / "partial").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        StageRunner(tmp_path).run("s", {"a": 1}, crash)
    seen = {}

    def finish(d: Path) -> dict:
        seen["partial"] = (d / "partial").is_file()
        return {}

    result = StageRunner(tmp_path).run("s", {"a": 1}, finish)
    assert seen == {"partial": True} and not result.cached


@pytest.mark.slow
def test_whole_pipeline_runs_caches_and_resumes(duomem_home: Path, smollm2: str, needs_torch, tmp_path: Path):
    """`duomem demo-pipeline --ci`: every stage on generated games; killed mid-run it resumes; a rerun does no work."""
    out = tmp_path / "ci"
    cmd = [sys.executable, "-m", "duomem.cli", "demo-pipeline", "--ci", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.time() + 1200
    while time.time() < deadline and not list((out / "stages").glob("eval_tune_*/episodes.jsonl")):
        time.sleep(1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr, done.stderr[-3000:]  # library warnings silenced at their source
    report = json.loads((out / "report.json").read_text())
    assert set(report["configs"]) == {"nomem", "own_memory", "teacher_memory", "lora_own_memory", "duomem",
                                      "teacher"}
    for s in report["configs"].values():
        assert s["n_episodes"] == 2 and s["complete"]
    assert set(report["k_sweep"]) == {"1", "2"} and report["chosen_k"] in (1, 2)
    assert report["artifacts"]["teacher_bank"]["n_entries"] >= 1 and report["artifacts"]["loras"]
    assert (out / "report.md").is_file() and (out / "success_per_type.png").is_file()
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "stages_executed.json").read_text()) == []
    changed = subprocess.run([*cmd, "--set", "eval.max_steps=3"], capture_output=True, text=True, timeout=2400)
    assert changed.returncode == 0, changed.stderr[-3000:]
    executed = json.loads((out / "stages_executed.json").read_text())
    assert executed and all(name.startswith(("eval_", "student_collect", "own_bank", "sft_", "lora_"))
                            for name in executed)
    assert "teacher_collect" not in executed and "generate" not in executed


def _student_collect_path(tmp_path: Path, overrides: list[str]) -> str:
    """Where a small pipeline with ``overrides`` keeps its student collection (a report-only run names the stage it
    has not run)."""
    from duomem.pipeline.run import Pipeline

    path = tmp_path / "c.yaml"
    path.write_text(f"output: {tmp_path / 'out'}\ndata: {{student_train_games: 2}}\n")
    pipe = Pipeline(load_config(path, overrides), show_progress=False, report_only=True)
    with pytest.raises(ConfigError, match="student_collect has not finished") as err:
        pipe.collect_student()
    return str(err.value).split("(")[1].split(")")[0]


def test_split_backends_keep_the_collected_stages(prepared: Path, tmp_path: Path):
    """Collect on one backend (e.g. batched on a GPU), evaluate on another: `student.collect_backend` keeps the
    student-collection key of the run that collected, so nothing is collected again; a report-only run names the
    stage that has not finished instead of running it."""
    collect_path = partial(_student_collect_path, tmp_path)

    gpu = collect_path(["eval.backend=transformers", "eval.device=cuda", "eval.batch=64"])
    on_device = collect_path(["student.collect_backend=transformers"])
    assert gpu == on_device
    assert collect_path([]) != gpu  # llama.cpp collection is another stage


def test_training_stage_keys_hold_every_training_setting():
    """The training stage's key is the LoRA config's full dump and the key version (no hand-picked fields): a
    changed training setting trains again, what changes nothing trained does not."""
    from duomem.distill.train import LoraConfig
    from duomem.eval.spec import KEY_VERSION
    from duomem.pipeline.config import LoraSettings
    from duomem.pipeline.stages import stage_key

    lora = LoraSettings(rank=16, alpha=32, epochs=2, learning_rate=2e-4, batch_size=4, grad_accum=4, max_length=4096)
    key = lora.key_fields()
    assert key["key_version"] == KEY_VERSION
    assert set(key) == set(LoraConfig.model_fields) - {"seed", "save_steps", "gradient_checkpointing"} | {"key_version"}
    for update in ({"warmup_ratio": 0.1}, {"dropout": 0.1}, {"group_by_length": False}, {"method": "full"}):
        assert stage_key(lora.model_copy(update=update).key_fields()) != stage_key(key), update
    for update in ({"device": "cuda"}, {"save_steps": 7}, {"keep_checkpoints": True}, {"quant": "f16"}):
        assert lora.model_copy(update=update).key_fields() == key, update
    full = lora.model_copy(update={"method": "full"})
    assert full.key_fields()["quant"] == "q8_0" != full.model_copy(update={"quant": "f16"}).key_fields()["quant"]
    assert lora.training(5) == LoraConfig(**{**lora.model_dump(include=set(LoraConfig.model_fields)), "seed": 5})


@pytest.mark.slow
def test_pipeline_with_a_full_fine_tune(duomem_home: Path, smollm2: str, needs_torch, tmp_path: Path):
    """`lora.method: full`: the DuoMem row plays the fully fine-tuned student, exported as a GGUF model."""
    from duomem.pipeline.run import Pipeline

    cfg = load_config(Path("duomem/pipeline/configs/ci.yaml"), [
        f"output={tmp_path / 'full'}", "lora.method=full", "lora.learning_rate=0.00003", "lora.max_steps=1",
        "eval.k_sweep=[]", "eval.configs=[duomem]", "eval.max_steps=3"])
    pipe = Pipeline(cfg, show_progress=False)
    report = pipe.run()
    assert report is not None
    (lora,) = pipe.artifacts["loras"].values()
    assert lora["method"] == "full" and lora["trainable_params"] == lora["total_params"]
    model = Path(lora["model"])
    assert model.suffix == ".gguf" and 100e6 < model.stat().st_size < 200e6 and "adapter" not in lora
    spec = json.loads(next((tmp_path / "full" / "stages").glob("eval_duomem-*/run.json")).read_text())["spec"]
    assert spec["model"] == str(model) and spec["adapter"] is None
    assert pipe.summaries["duomem"]["n_episodes"] == 2


def test_bank_and_collection_keys_come_from_the_settings(tmp_path: Path):
    """The memory stage's key is the memory config's dump less how banks are used (a new memory setting enters it by
    itself), and a collection's key is the full key of the spec that plays it: a changed play setting collects
    again (no hand-picked fields to forget)."""
    from duomem.eval.spec import KEY_VERSION
    from duomem.pipeline.config import MemoryConfig

    memory = MemoryConfig()
    key = memory.bank_fields()
    used = {"teacher_writer", "student_writer", "show_format", "train_exclude", "top_k", "retrieval"}
    assert set(key) == set(MemoryConfig.model_fields) - used | {"key_version"} and key["key_version"] == KEY_VERSION
    for update in ({"format": "abstract"}, {"embedder": "bm25"}, {"games": 7}, {"copy_policy": "reject"}):
        assert memory.model_copy(update=update).bank_fields() != key, update
    for update in ({"top_k": 4}, {"retrieval": "same_type"}, {"show_format": "script"}):
        assert memory.model_copy(update=update).bank_fields() == key, update

    collect_path = partial(_student_collect_path, tmp_path)

    base = collect_path([])
    for override in ("student.n_ctx=4096", "eval.action_selection=score", "student.fewshot=heldout", "seed=1"):
        assert collect_path([override]) != base, override
    assert collect_path(["eval.threads=1", "eval.workers=4"]) == base


def test_scienceworld_config_and_its_split_check():
    """The shipped ScienceWorld config loads (its own splits, the plan writer, the agent's turn limit left to the
    environment); an ALFWorld split with ``source: scienceworld`` is one clear line."""
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "configs" / "scienceworld-smollm2-135m.yaml")
    assert (cfg.data.source, cfg.data.eval_split, cfg.data.tune_split, cfg.teacher_writer) == \
        ("scienceworld", "test", "dev", "plan")
    with pytest.raises(ConfigError, match=r"ScienceWorld's splits are train, dev, test .*eval_split: valid_unseen"):
        load_config(root / "configs" / "scienceworld-smollm2-135m.yaml", ["data.eval_split=valid_unseen"])
