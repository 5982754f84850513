"""An LLM teacher behind an OpenAI-compatible server (issue 16): `duomem serve` on loopback, the pipeline's
``teacher.policy: llm`` collecting through it, writing its own memories and playing the teacher row."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from duomem.errors import ConfigError
from duomem.pipeline.config import EXPERT_MEMORY_WRITER, load_config

STUDENT = "smollm2-135m-lora"
"""The shipped plain-LoRA student (82% on valid_unseen): the strongest model duomem has produced, so the teacher."""


def test_an_llm_teacher_writes_its_own_memories_by_default(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("teacher: {policy: llm, model: 'openai:big@http://127.0.0.1:9/v1'}\n")
    assert load_config(path).teacher_writer == "openai:big@http://127.0.0.1:9/v1"
    assert load_config(path, ["memory.teacher_writer=plan"]).teacher_writer == "plan"
    assert load_config(None).teacher_writer == EXPERT_MEMORY_WRITER
    with pytest.raises(ConfigError, match=r"llm teacher needs teacher\.model"):
        load_config(None, ["teacher.policy=llm"])


def test_a_distilled_student_can_teach_batched_on_a_gpu(tmp_path: Path):
    """An llm teacher with its adapter, its memory bank and a backend (a distilled 1.5B playing the train games
    batched on a GPU, say) plays with exactly those settings, which enter its collection's key; the expert takes
    none of them."""
    from duomem.pipeline.run import Pipeline

    path = tmp_path / "c.yaml"
    path.write_text(f"output: {tmp_path / 'run'}\n"
                    "teacher: {policy: llm, model: qwen2.5-coder-1.5b, adapter: runs/t/lora, memory: runs/t/bank, "
                    "top_k: 1, backend: transformers, device: cuda, batch: 64, samples_per_task: 1}\n")
    spec = Pipeline(load_config(path), show_progress=False, report_only=True).teacher_spec()
    assert (spec.model, spec.adapter, spec.memory, spec.top_k) == ("qwen2.5-coder-1.5b", "runs/t/lora", "runs/t/bank", 1)
    assert (spec.backend, spec.device, spec.batch) == ("transformers", "cuda", 64)
    plain = Pipeline(load_config(path, ["teacher.adapter=null"]), show_progress=False, report_only=True).teacher_spec()
    assert plain.fingerprint() != spec.fingerprint()
    for wrong in ("teacher.adapter=runs/t/lora", "teacher.backend=transformers", "teacher.batch=8"):
        with pytest.raises(ConfigError, match="the expert teacher takes no model, adapter"):
            load_config(None, [wrong])
    shipped = load_config(Path(__file__).resolve().parents[1] / "configs" / "llm-teacher-smollm2-135m.yaml")
    assert shipped.teacher.adapter and shipped.teacher.batch > 1 and shipped.data.train_games == 1200


def test_duomem_serve_answers_on_loopback_and_stops(smollm2: str, tmp_path: Path):
    """One command serves a shipped student; a client reaches it by the name the command prints."""
    from duomem.llm import load_chat_model
    from duomem.llm.serve import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "duomem.cli", "serve", "--student", STUDENT, "--port", str(port),
                             "--threads", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2) as response:
                    assert [m["id"] for m in json.load(response)["data"]] == [STUDENT]
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer in 120 s"
                time.sleep(0.5)
        model = load_chat_model(f"openai:{STUDENT}@http://127.0.0.1:{port}/v1")
        answer = model.complete([{"role": "user", "content": "Your task is to: put a mug in the sink."}],
                                max_tokens=12)
        assert answer.completion_tokens > 0
        model.close()
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
    assert f"openai:{STUDENT}@http://127.0.0.1:{port}/v1" in out.replace("\n", "")


@pytest.mark.slow
def test_pipeline_with_a_served_llm_teacher(prepared: Path, smollm2: str, tmp_path: Path):
    """The teacher (the shipped LoRA student, served) plays train games through the OpenAI-compatible backend; its
    won trajectories keep its own thoughts as demonstrations; it writes the teacher memories itself; the teacher
    row is the served model played by the same agent, and the report says so."""
    from duomem.llm.serve import ModelServer
    from duomem.pipeline.run import run_pipeline

    with ModelServer("smollm2-135m", adapter=Path("adapters") / STUDENT / "adapter.gguf", alias=STUDENT,
                     threads=1, log=tmp_path / "server.log") as server:
        cfg = tmp_path / "llm-teacher.yaml"
        cfg.write_text(f"""
name: llm-teacher
output: {tmp_path / "run"}
student: {{model: smollm2-135m}}
teacher: {{policy: llm, model: '{server.model_name}', samples_per_task: 1, max_steps: 30}}
memory: {{format: both, embedder: bm25, top_k: 1, games: 2}}
data: {{train_games: 2, eval_split: valid_seen, eval_games: 1}}
eval: {{max_steps: 4, workers: 1, threads: 1, k_sweep: [], configs: [teacher_memory, teacher]}}
""")
        report_path, _ = run_pipeline(load_config(cfg), show_progress=False)
    stages = tmp_path / "run" / "stages"
    (collected,) = stages.glob("teacher_collect-*")
    trajectories = [json.loads(line) for line in (collected / "trajectories.jsonl").read_text().splitlines()]
    assert {t["policy"] for t in trajectories} == {"llm"} and {t["model"] for t in trajectories} == {STUDENT}
    demos = [json.loads(line) for line in (collected / "demonstrations.jsonl").read_text().splitlines()]
    assert demos, "the served teacher won none of its 2 train games"
    won = {t["game_id"]: t for t in trajectories if t["won"]}
    for demo in demos:  # its own steps, thoughts included, minus the commands the game did not take
        played = [s for s in won[demo["game_id"]]["steps"] if s["match"] != "unmatched"]
        assert demo["steps"] == played
    (bank,) = stages.glob("teacher_bank-*")
    manifest = json.loads((bank / "bank" / "manifest.json").read_text())
    assert manifest["n_entries"] == len(demos) and manifest["writers"] == [STUDENT]
    report = json.loads(Path(report_path).with_suffix(".json").read_text())
    assert report["configs"]["teacher"]["policy"] == "llm" and report["configs"]["teacher"]["model"] == server.model_name
