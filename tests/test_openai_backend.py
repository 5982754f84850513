"""The OpenAI-compatible backend against a real server: llama-cpp-python's, over the packaged SmolLM2 GGUF."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from duomem.errors import ModelError
from duomem.llm.serve import SERVER_MODULES, ModelServer

ALIAS = "smollm2-135m"
MESSAGES = [{"role": "system", "content": "You are a household robot. Answer with one command."},
            {"role": "user", "content": "You see a cabinet 1 and a fridge 1. Your task is to: cool an egg."}]


def _free_port() -> int:
    from duomem.llm.serve import free_port

    return free_port()


def _server(gguf: Path, log: Path, api_key: str | None = None) -> ModelServer:
    """duomem's model server (llama-cpp-python's, see ``duomem serve``) in a subprocess on loopback."""
    return ModelServer(str(gguf), alias=ALIAS, n_ctx=2048, threads=1, log=log, api_key=api_key)


@pytest.fixture(scope="module")
def gguf(smollm2: str) -> Path:
    for module in SERVER_MODULES:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"llama-cpp-python's server needs {module}: pip install 'llama-cpp-python[server]'")
    from duomem.llm.registry import resolve

    path = resolve(smollm2).path
    assert path is not None
    return path


@pytest.fixture(scope="module")
def server(gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    srv = _server(gguf, tmp_path_factory.mktemp("server") / "server.log")
    yield srv
    srv.stop()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DUOMEM_OPENAI_RETRIES", "2")
    monkeypatch.setenv("DUOMEM_OPENAI_BACKOFF", "0.05")
    monkeypatch.setenv("DUOMEM_OPENAI_TIMEOUT", "60")


def test_completion_usage_stop_and_greedy_determinism(server: ModelServer):
    from duomem.llm import load_chat_model
    from duomem.llm.base import ChatModel
    from duomem.llm.openai_backend import OpenAIChatModel

    model = OpenAIChatModel(ALIAS, server.url, context_length=2048)
    assert isinstance(model, ChatModel) and model.name == ALIAS and model.context_length == 2048
    a = model.complete(MESSAGES, max_tokens=24, stop=["\n"], temperature=0.0, seed=7)
    b = model.complete(MESSAGES, max_tokens=24, stop=["\n"], temperature=0.0, seed=7)
    assert a.text == b.text and a.text.strip()
    assert "\n" not in a.text and a.finish_reason in ("stop", "length")
    assert a.prompt_tokens > 20 and 0 < a.completion_tokens <= 24 and a.seconds > 0
    # the count comes from the server's tokenizer (plus template overhead): close to what it was billed
    assert abs(model.count_tokens(MESSAGES) - a.prompt_tokens) <= 0.2 * a.prompt_tokens
    long = model.complete(MESSAGES, max_tokens=5, stop=[], temperature=0.0, seed=7)
    assert long.completion_tokens == 5 and long.finish_reason == "length"
    # stops are enforced client-side too (the text is cut at the first stop string)
    word = a.text.split()[-1]
    cut = model.complete(MESSAGES, max_tokens=24, stop=["\n", word], temperature=0.0, seed=7)
    assert word not in cut.text and a.text.startswith(cut.text)
    model.close()
    routed = load_chat_model(f"openai:{ALIAS}@{server.url}")
    assert isinstance(routed, OpenAIChatModel) and routed.model == ALIAS
    routed.close()


def test_agent_plays_a_short_episode_through_the_runner(server: ModelServer, prepared: Path, tmp_path: Path,
                                                       fast_retries: None):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import EPISODES, run_rollouts
    from duomem.eval.spec import RolloutSpec

    spec = RolloutSpec(policy="llm", model=f"openai:{ALIAS}@{server.url}", backend="auto", max_steps=4)
    task = load_tasks("valid_unseen")[0]
    result = run_rollouts(spec, [task], tmp_path / "run", name="openai", show_progress=False)
    assert result.played == 1
    lines = (tmp_path / "run" / EPISODES).read_text().splitlines()
    assert len(lines) == 1
    record = result.records[0]
    assert record.game_id == task.game_id and record.steps == 4 and record.error is None
    assert record.model == ALIAS and record.trajectory.model == ALIAS
    assert record.prompt_tokens > 0 and record.completion_tokens > 0 and record.llm_s > 0
    assert all(s.raw is not None for s in record.trajectory.steps)


def test_unreachable_endpoint_fails_fast_with_one_line(prepared: Path, tmp_path: Path):
    from duomem.llm.openai_backend import OpenAIChatModel

    start = time.monotonic()
    with pytest.raises(ModelError, match="cannot reach the model server") as err:
        OpenAIChatModel(ALIAS, f"http://127.0.0.1:{_free_port()}/v1", max_tries=2, backoff=0.05, timeout=2)
    assert time.monotonic() - start < 10 and "\n" not in str(err.value)
    # through the CLI: one line on stderr, exit code 2, no traceback
    env = {**os.environ, "DUOMEM_OPENAI_RETRIES": "2", "DUOMEM_OPENAI_BACKOFF": "0.05",
           "DUOMEM_OPENAI_TIMEOUT": "2", "COLUMNS": "400"}
    cli = subprocess.run(
        [sys.executable, "-m", "duomem.cli", "eval", "--policy", "llm", "--model",
         f"openai:{ALIAS}@http://127.0.0.1:{_free_port()}/v1", "--split", "valid_unseen", "--games", "1",
         "--max-steps", "2", "--out", str(tmp_path / "cli"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=120)
    assert cli.returncode == 2, cli.stderr
    assert "Traceback" not in cli.stderr and len(cli.stderr.strip().splitlines()) == 1
    assert "cannot reach the model server" in cli.stderr


def test_wrong_path_is_a_clear_404(server: ModelServer):
    from duomem.llm.openai_backend import OpenAIChatModel

    model = OpenAIChatModel(ALIAS, server.url.replace("/v1", "/nowhere/v1"), max_tries=2, backoff=0.05)
    with pytest.raises(ModelError, match=r"does not serve 'smollm2-135m' \(HTTP 404") as err:
        model.complete(MESSAGES, max_tokens=4)
    assert "\n" not in str(err.value)


def test_bad_key_is_a_clear_error(gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from duomem.llm.openai_backend import OpenAIChatModel

    srv = _server(gguf, tmp_path / "keyed.log", api_key="s3cret")
    try:
        monkeypatch.setenv("DUOMEM_OPENAI_KEY_ENV", "MY_TEACHER_KEY")
        monkeypatch.setenv("MY_TEACHER_KEY", "wrong")
        with pytest.raises(ModelError, match=r"rejected the API key \(HTTP 401\); set MY_TEACHER_KEY") as err:
            OpenAIChatModel(ALIAS, srv.url, max_tries=2, backoff=0.05)
        assert "\n" not in str(err.value)
        monkeypatch.delenv("MY_TEACHER_KEY")  # the placeholder key is refused too
        with pytest.raises(ModelError, match="rejected the API key"):
            OpenAIChatModel(ALIAS, srv.url, max_tries=2, backoff=0.05)
        monkeypatch.setenv("MY_TEACHER_KEY", "s3cret")
        model = OpenAIChatModel(ALIAS, srv.url, max_tries=2, backoff=0.05)
        assert model.complete(MESSAGES, max_tokens=4).completion_tokens > 0
        model.close()
    finally:
        srv.stop()


def test_server_dying_mid_run_keeps_finished_episodes(gguf: Path, prepared: Path, tmp_path: Path,
                                                      fast_retries: None):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import EPISODES, run_rollouts
    from duomem.eval.spec import RolloutSpec

    srv = _server(gguf, tmp_path / "dying.log")
    try:
        spec = RolloutSpec(policy="llm", model=f"openai:{ALIAS}@{srv.url}", max_steps=3)
        tasks = load_tasks("valid_unseen")[:3]
        killed = []

        def kill_after_first(record) -> None:
            if not killed:
                srv.proc.kill()
                srv.proc.wait(timeout=30)
                killed.append(record.game_id)

        with pytest.raises(ModelError, match="stopped answering mid-run") as err:
            run_rollouts(spec, tasks, tmp_path / "run", name="dying", show_progress=False,
                         on_record=kill_after_first)
        assert "\n" not in str(err.value)
        kept = [json.loads(line) for line in (tmp_path / "run" / EPISODES).read_text().splitlines()]
        assert [r["game_id"] for r in kept] == killed == [tasks[0].game_id]
        assert kept[0]["steps"] == 3 and kept[0]["error"] is None
    finally:
        srv.stop()


# --- action selection (issue 13) ------------------------------------------------------------------------------------
COMMANDS = ("go to cabinet 1", "go to cabinet 10", "go to fridge 1", "open fridge 1", "look")


def test_score_from_prompt_logprobs_matches_llamacpp(server: ModelServer, smollm2_model):
    """llama-cpp-python's server returns prompt log-probabilities (``logits_all``, its default): the scores equal
    the llama.cpp backend's on the same GGUF, token for token (within llama.cpp's batch-shape noise)."""
    from duomem.llm.base import Candidate
    from duomem.llm.openai_backend import OpenAIChatModel

    model = OpenAIChatModel(ALIAS, server.url, context_length=2048)
    candidates = [Candidate(c) for c in COMMANDS] + [Candidate("think:", ends_turn=False)]
    remote = model.score(MESSAGES, candidates)
    local = smollm2_model.score(MESSAGES, candidates)
    assert remote.n_tokens == local.n_tokens and remote.prompt_tokens == local.prompt_tokens
    assert remote.logprobs == pytest.approx(local.logprobs, abs=0.5)
    assert sum(abs(a - b) < 1e-3 for a, b in zip(remote.logprobs, local.logprobs, strict=True)) >= 3
    model.close()


def test_grammar_through_the_server(server: ModelServer):
    from duomem.llm.base import Constraint
    from duomem.llm.openai_backend import OpenAIChatModel

    model = OpenAIChatModel(ALIAS, server.url, context_length=2048)
    for allow_think in (False, True):
        choices = Constraint(COMMANDS, allow_think=allow_think)
        out = model.complete(MESSAGES, max_tokens=24, stop=["\n"], choices=choices)
        assert choices.accepts(out.text), out.text
    model.close()


class _NoLogprobs:
    """A tiny OpenAI-compatible server on loopback that completes but returns no log-probabilities and ignores
    grammars (as many hosted APIs do)."""

    def __init__(self) -> None:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path.endswith("/models"):
                    self._send({"object": "list", "data": [{"id": ALIAS, "object": "model"}]})
                else:
                    self._send({"error": {"message": "not found"}}, 404)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                json.loads(self.rfile.read(length) or b"{}")
                usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
                if self.path.endswith("/chat/completions"):
                    self._send({"id": "x", "object": "chat.completion", "created": 0, "model": ALIAS, "usage": usage,
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": "I would open it"}}]})
                elif self.path.endswith("/completions"):
                    self._send({"id": "x", "object": "text_completion", "created": 0, "model": ALIAS,
                                "usage": usage, "choices": [{"index": 0, "text": "x", "finish_reason": "length",
                                                             "logprobs": None}]})
                else:
                    self._send({"error": {"message": "not found"}}, 404)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_no_prompt_logprobs_or_grammar_is_a_clear_error(fast_retries: None):
    from duomem.llm.base import Candidate, Constraint
    from duomem.llm.openai_backend import OpenAIChatModel

    fake = _NoLogprobs()
    try:
        chatml = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
        model = OpenAIChatModel(ALIAS, fake.url, chat_template=chatml)
        with pytest.raises(ModelError, match=r"does not return prompt log-probabilities.*--actions free"):
            model.score(MESSAGES, [Candidate("look")])
        with pytest.raises(ModelError, match=r"ignored the grammar.*--actions free"):
            model.complete(MESSAGES, max_tokens=8, choices=Constraint(COMMANDS))
        model.close()
        bare = OpenAIChatModel("some-hosted-model", fake.url)
        with pytest.raises(ModelError, match=r"chat template.*--actions free"):
            bare.score(MESSAGES, [Candidate("look")])
        bare.close()
    finally:
        fake.stop()
