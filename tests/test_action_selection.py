"""Action selection on a real game with the real 135M student: grammar and score never play an inadmissible
command; score chooses among exactly the admissible commands (and ``think:``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from duomem.eval.spec import RolloutSpec


@pytest.fixture(scope="module")
def game(prepared: Path):
    from duomem.envs.alfworld_data import load_tasks
    from duomem.eval.runner import select_games

    return select_games(load_tasks("valid_seen"), 1, seed=0)[0]


@pytest.mark.parametrize("mode", ["grammar", "score"])
def test_constrained_modes_play_only_admissible_commands(game, smollm2_model, mode: str):
    from duomem.agent.react import ReActAgent
    from duomem.eval.player import play

    spec = RolloutSpec(policy="llm", model="smollm2-135m", action_selection=mode, max_steps=5)
    agent = ReActAgent(smollm2_model, action_selection=mode)
    (record,) = play(spec, [(game, 0)], policy=agent)
    actions = [s for s in record.trajectory.steps if s.kind == "action"]
    assert actions and record.invalid_actions == 0 and record.action_selection == mode
    assert all(s.observation != "Nothing happens." for s in actions)
    assert all(s.match == ("scored" if mode == "score" else "exact") for s in actions)
    assert all(s.text.strip() for s in record.trajectory.steps if s.kind == "think")
    if mode == "score":
        assert record.scored_tokens > 0


def test_score_candidates_are_the_admissible_commands(game, smollm2_model):
    from duomem.agent.episode import EpisodeState
    from duomem.agent.react import ReActAgent
    from duomem.envs.alfworld import AlfworldEnv

    env = AlfworldEnv(expert=False)
    try:
        obs = env.reset(game, seed=0)
    finally:
        env.close()
    state = EpisodeState(game, "llm", "smollm2-135m", 0, 0, 5)
    state.begin(obs, 0.0)
    agent = ReActAgent(smollm2_model, action_selection="score")
    agent.start(state)
    cands = agent.candidates(state)
    assert [c.text for c in cands if c.ends_turn] == obs.admissible_commands
    assert [c.text for c in cands if not c.ends_turn] == ["think:"]
    scores = smollm2_model.score(agent.messages(state), cands)
    assert len(scores.logprobs) == len(cands) and all(lp < 0 for lp in scores.logprobs)
    (decision,) = agent.act([state])
    assert decision.kind == "think" or decision.command in obs.admissible_commands
