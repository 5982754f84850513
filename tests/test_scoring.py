"""Action selection (issue 13): ``ChatModel.score`` and constrained ``complete`` on the packaged SmolLM2-135M, both
backends, with the agent's real prompt for a real ALFWorld game; and the free-mode fallback on that game.

Tolerances. transformers (fp32): each candidate's summed log-probability equals the one from a plain forward pass
of prompt + candidate (no cache) within 2e-3 nats (it agrees to about 1e-4). llama.cpp: against llama-cpp-python's
own evaluation in one sequence (``eval`` with ``logits_all``, the prompt's last token re-evaluated together with
the candidate's tokens), at least half of the candidates agree within 1e-4 nats (most to 1e-8) and every
one within 0.5 nats. The loose bound is llama.cpp's, not the scoring's: its CPU kernels give a row of logits that
depends on the shape of the batch it was computed in (the same tokens decoded as a 1-token batch or inside a
2-token one differ by up to 0.43 in a logit at 1,500 tokens of context, in llama-cpp-python's own ``eval``), and
which candidates land on such rows changes with the set of candidates.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from duomem.llm.base import Candidate, Constraint, Scores

TOL = 2e-3


@pytest.fixture(scope="module")
def game(duomem_home: Path, archive_dir: Path):
    """A kitchen game of valid_unseen (28 commands at the start, a ~1,500-token prompt with two examples): the
    agent's first prompt and, after one command, its second."""
    from duomem.agent.prompts import conversation, task_prompt
    from duomem.agent.trajectory import Step
    from duomem.envs.alfworld import AlfworldEnv
    from duomem.envs.alfworld_data import load_tasks, prepare

    prepare(archive_dir, splits=["valid_unseen"], verify="none")
    task = next(t for t in load_tasks("valid_unseen") if t.task_type == "cool")
    env = AlfworldEnv(max_steps=30, expert=False)
    first = env.reset(task)
    first_user = task_prompt(task.task_type, first.text, shots=2)
    command = next(c for c in first.admissible_commands if c.startswith("go to countertop"))
    second = env.step(command)
    steps = [Step(kind="action", text=command, observation=second.text)]
    yield {"task": task, "env": env, "first_user": first_user,
           "messages1": conversation(first_user, []), "admissible1": list(first.admissible_commands),
           "steps": steps, "messages2": conversation(first_user, steps),
           "admissible2": list(second.admissible_commands)}
    env.close()


def _candidates(admissible: list[str]) -> list[Candidate]:
    return [Candidate(c) for c in admissible] + [Candidate("think:", ends_turn=False)]


@pytest.fixture(scope="module")
def llama(smollm2_model):
    """The session's packaged 135M model on llama.cpp (conftest)."""
    return smollm2_model


@pytest.fixture(scope="module")
def llama_reference(smollm2: str):
    """llama-cpp-python's own evaluation, one sequence, logits for every position (no scoring code of ours)."""
    from llama_cpp import Llama

    from duomem.llm.llamacpp import load_defaults, plain_weights_needed
    from duomem.llm.registry import resolve

    with load_defaults(None, plain_weights=plain_weights_needed(False)):  # AMX kernels crash (llamacpp.py)
        ref = Llama(model_path=str(resolve(smollm2).path), n_ctx=2048, n_batch=512, logits_all=True, n_threads=2,
                    n_threads_batch=2, verbose=False)
    yield ref
    ref.close()


@pytest.fixture(scope="module")
def hf(smollm2: str, needs_torch: None):
    from duomem.llm import load_chat_model

    model = load_chat_model(smollm2, backend="transformers", threads=2)
    yield model
    model.close()


def _continuations(model, messages, candidates) -> tuple[list[int], list[list[int]]]:
    """Prompt tokens and each candidate's tokens, as the backend scores them (the boundary is checked there)."""
    from duomem.llm.constrain import continuation_ids, turn_shape

    if hasattr(model, "bundle"):
        from duomem.llm.hf import encode, render

        text = render(model.bundle, messages)
        prompt = encode(model.bundle, text)
        shape = turn_shape(lambda m, g: render(model.bundle, m, g), messages, text, True)
    else:
        text = model.render(messages)
        prompt = model.tokenize(text)
        shape = turn_shape(model.render, messages, text, True)
    return prompt, continuation_ids(model, text, prompt, shape, candidates)


def _logprob_rows(rows, start: int, tokens: list[int]) -> float:
    """Sum of log_softmax(rows[start + j])[tokens[j]] in float64."""
    import numpy as np

    total = 0.0
    for j, t in enumerate(tokens):
        row = np.asarray(rows[start + j], dtype=np.float64)
        peak = row.max()
        total += row[t] - (peak + np.log(np.exp(row - peak).sum()))
    return float(total)


def _llama_full(ref, prompt: list[int], cont: list[int]) -> float:
    """From scratch: evaluate prompt + candidate in one sequence, read the candidate's rows."""
    ref.reset()
    ref._ctx.kv_cache_clear()
    ref.eval(prompt + cont)
    return _logprob_rows(ref.scores, len(prompt) - 1, cont)


def _llama_sequential(ref, prompt: list[int], conts: list[list[int]]) -> list[float]:
    """The prompt once, then each candidate in the same sequence (after the prompt's last token, re-evaluated
    with it so that no row comes from a 1-token batch), cut back to the prompt after each."""
    ref.reset()
    ref._ctx.kv_cache_clear()
    ref.eval(prompt)
    out = []
    for cont in conts:
        ref.n_tokens = len(prompt) - 1
        ref.eval(prompt[-1:] + cont[:-1])
        out.append(_logprob_rows(ref.scores, len(prompt) - 1, cont))
    return out


def _assert_llama_close(got: list[float], want: list[float]) -> None:
    diffs = [abs(a - b) for a, b in zip(got, want, strict=True)]
    exact = sum(d < 1e-4 for d in diffs)
    assert exact >= 0.5 * len(diffs) and max(diffs) < 0.5, sorted(diffs)[-5:]


def _hf_full(model, prompt: list[int], cont: list[int]) -> float:
    import torch

    with torch.no_grad():
        logits = model.bundle.model(torch.tensor([prompt + cont])).logits[0]
    return _logprob_rows(logits[len(prompt) - 1:].double().numpy(), 0, cont)


def _check_scores(scores: Scores, candidates: list[Candidate], conts: list[list[int]], prompt: list[int]) -> None:
    assert len(scores.logprobs) == len(candidates) == len(scores.n_tokens)
    assert scores.n_tokens == [len(c) for c in conts]
    assert scores.prompt_tokens == len(prompt)
    assert all(lp < 0 for lp in scores.logprobs)


# --- (a)-(c): scores equal the direct computation, in order, with the cache reused ---------------------------------
def test_llamacpp_scores_match_full_evaluation(game, llama, llama_reference):
    messages, candidates = game["messages1"], _candidates(game["admissible1"])
    assert 25 <= len(candidates) <= 40
    llama.reset_cache()  # nothing cached
    scores = llama.score(messages, candidates)
    prompt, conts = _continuations(llama, messages, candidates)
    assert 1300 <= len(prompt) <= 1700
    _check_scores(scores, candidates, conts, prompt)
    assert scores.cached_tokens == 0 and scores.evaluated_tokens > len(prompt)
    # each command ends its turn: "<|im_end|>" is its last token; the thought prefix has none
    im_end = llama.tokenize_raw("<|im_end|>")
    assert all(c[-1:] == im_end for c in conts[:-1]) and im_end[0] not in conts[-1]
    _assert_llama_close(scores.logprobs, _llama_sequential(llama_reference, prompt, conts))
    picked = (0, len(conts) // 2, len(conts) - 1)
    _assert_llama_close([scores.logprobs[i] for i in picked],
                        [_llama_full(llama_reference, prompt, conts[i]) for i in picked])


def test_llamacpp_scores_keep_order_and_reuse_the_cache(game, llama, llama_reference):
    messages, candidates = game["messages1"], _candidates(game["admissible1"])
    first = llama.score(messages, candidates)
    # (b) exactly the candidates given, in the order given (a duplicate scores the same)
    shuffled = [*candidates[::-1], candidates[3]]
    again = llama.score(messages, shuffled)
    assert again.cached_tokens == again.prompt_tokens  # the same prompt: all cached, two tokens re-evaluated
    assert again.logprobs == pytest.approx([*first.logprobs[::-1], first.logprobs[3]], abs=1e-4)
    assert llama.score(messages, []).logprobs == []
    # (c) the next turn's prompt extends this one: only its new tokens are evaluated
    messages2, candidates2 = game["messages2"], _candidates(game["admissible2"])
    second = llama.score(messages2, candidates2)
    prompt2, conts2 = _continuations(llama, messages2, candidates2)
    _check_scores(second, candidates2, conts2, prompt2)
    assert second.cached_tokens >= first.prompt_tokens - 1
    assert second.evaluated_tokens < len(prompt2) - first.prompt_tokens + sum(len(c) for c in conts2)
    _assert_llama_close(second.logprobs, _llama_sequential(llama_reference, prompt2, conts2))
    # complete() after score() still finds the prompt cached and answers as on a fresh model
    after = llama.complete(messages2, max_tokens=24, stop=["\n"])
    assert after.cached_tokens >= len(prompt2) - 1
    llama.reset_cache()
    fresh = llama.complete(messages2, max_tokens=24, stop=["\n"])
    assert after.text == fresh.text


def test_transformers_scores_match_full_forward(game, hf):
    messages, candidates = game["messages1"], _candidates(game["admissible1"])
    hf._cache, hf._cached_ids = None, []
    scores = hf.score(messages, candidates)
    prompt, conts = _continuations(hf, messages, candidates)
    _check_scores(scores, candidates, conts, prompt)
    assert scores.cached_tokens == 0
    picked = (0, 1, len(conts) // 2, len(conts) - 1)
    for i in picked:
        assert scores.logprobs[i] == pytest.approx(_hf_full(hf, prompt, conts[i]), abs=TOL)
    # (b) order and (c) cache reuse on the next turn
    reordered = hf.score(messages, candidates[::-1])
    assert reordered.logprobs == pytest.approx(scores.logprobs[::-1], abs=1e-4)
    messages2, candidates2 = game["messages2"], _candidates(game["admissible2"])
    second = hf.score(messages2, candidates2)
    prompt2, conts2 = _continuations(hf, messages2, candidates2)
    _check_scores(second, candidates2, conts2, prompt2)
    assert second.cached_tokens >= len(prompt) - 1
    for i in (0, len(conts2) - 1):
        assert second.logprobs[i] == pytest.approx(_hf_full(hf, prompt2, conts2[i]), abs=TOL)
    assert hf._cache.get_seq_length() == len(prompt2)  # candidates were cropped off


def test_backends_agree_on_the_token_boundary(game, llama, hf):
    """Both backends tokenize prompt and candidates alike (the same GGUF tokenizer)."""
    messages, candidates = game["messages2"], _candidates(game["admissible2"])
    assert _continuations(llama, messages, candidates) == _continuations(hf, messages, candidates)


# --- (d) constrained decoding -------------------------------------------------------------------------------------
def _play_constrained(model, game, steps: int = 4) -> list[str]:
    """A few turns of the real game, each answer constrained to the admissible commands or a thought."""
    from duomem.agent.prompts import conversation
    from duomem.agent.trajectory import Step
    from duomem.envs.alfworld import AlfworldEnv

    env = AlfworldEnv(max_steps=steps + 2, expert=False)
    obs = env.reset(game["task"])
    history: list[Step] = []
    texts = []
    for turn in range(steps):
        allow_think = not history or history[-1].kind != "think"
        choices = Constraint(tuple(obs.admissible_commands), allow_think=allow_think)
        out = model.complete(conversation(game["first_user"], history), max_tokens=48, stop=["\n"],
                             seed=turn, choices=choices)
        texts.append(out.text)
        assert choices.accepts(out.text), out.text
        if out.text.startswith("think:"):
            history.append(Step(kind="think", text=out.text[len("think:"):].strip(), observation="OK."))
        else:
            obs = env.step(out.text)
            history.append(Step(kind="action", text=out.text, observation=obs.text))
    env.close()
    return texts


@pytest.mark.parametrize("backend", ["llama", "hf"])
def test_constrained_output_is_a_command_or_a_thought(backend, game, request):
    model = request.getfixturevalue(backend)
    texts = _play_constrained(model, game)
    commands = tuple(game["admissible1"])
    # without thoughts: always one of the commands, also on the second prompt
    for messages, admissible in ((game["messages1"], commands), (game["messages2"], tuple(game["admissible2"]))):
        out = model.complete(messages, max_tokens=48, stop=["\n"], choices=Constraint(admissible, False))
        assert out.text in admissible
    # commands with quotes and backslashes survive the grammar's escaping
    odd = ('say "hello"', "path a\\b", "go to desk 1")
    out = model.complete(game["messages1"], max_tokens=24, stop=["\n"], choices=Constraint(odd, False))
    assert out.text in odd, texts


def test_grammar_is_a_radix_tree_of_exactly_the_commands(game):
    """The GBNF command rule factors shared prefixes (a rule per branch point, not an alternative per command:
    ScienceWorld lists thousands a turn) and its language is exactly the commands: a real game's, one the prefix
    of another, and ones with quotes and backslashes."""
    import json
    import re

    from duomem.llm.constrain import gbnf

    commands = (*game["admissible1"], *game["admissible2"], "look", "look around", 'say "hi"', "path a\\b")
    text = gbnf(Constraint(commands, False))
    rules = dict(line.split(" ::= ", 1) for line in text.splitlines()[1:])
    alternative = re.compile(r'"((?:[^"\\]|\\.)*)"(?: (c\d+))?')

    def language(name: str) -> set[str]:
        body = rules[name]
        optional = body.startswith("(") and body.endswith(")?")
        out = {""} if optional else set()
        for literal, child in alternative.findall(body[1:-2] if optional else body):
            head = json.loads(f'"{literal}"')
            out |= {head + tail for tail in language(child)} if child else {head}
        return out

    assert language("command") == set(commands)
    assert len(rules) - 1 < len(set(commands)) / 2 and rules["command"].count('"') < len(set(commands))


# --- (e) free mode never plays another command --------------------------------------------------------------------
def test_free_mode_fallback_never_changes_verb_or_object(game):
    from duomem.agent.parsing import _completes, normalise, parse_action

    admissible = game["admissible2"]
    objects = sorted({w for c in admissible for w in normalise(c).split()[1:] if w.isalpha()} - {"to", "from"})
    rng = random.Random(0)
    texts = []
    for command in admissible:
        words = command.split()
        for k, w in enumerate(words):
            if w.isdigit():
                texts.append(" ".join([*words[:k], str(int(w) + 1), *words[k + 1:]]))
                texts.append(" ".join([*words[:k], w + "0", *words[k + 1:]]))
            elif k > 0 and w not in ("to", "from", "with"):
                texts.append(" ".join([*words[:k], rng.choice(objects), *words[k + 1:]]))
        texts.append(" ".join(["open" if words[0] != "open" else "close", *words[1:]]))
        texts.append(" ".join(w for w in words if not w.isdigit()))  # numbers left out
    assert len(texts) > 100
    for text in texts:
        p = parse_action(text, admissible)
        if p.command not in admissible:
            assert (p.command, p.match, p.invalid) == (text, "unmatched", True)
            continue
        said, played = normalise(text).split(), normalise(p.command).split()
        assert said[0] == played[0] and all(w in played for w in said), (text, p.command)
        if p.match != "exact":
            assert _completes(said, played), (text, p.command)  # in order, only numbers and a tail added
    # the game answers an unmatched command with "Nothing happens." and no state changes
    env = game["env"]
    for wrong in ("take potato 2 from microwave 1", next(t for t in texts if t not in admissible)):
        p = parse_action(wrong, admissible)
        assert (p.command, p.match) == (wrong, "unmatched")
        obs = env.step(p.command)
        assert "Nothing happens" in obs.text and sorted(obs.admissible_commands) == sorted(admissible)
