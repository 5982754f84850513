"""ScienceWorld on real episodes: the task table against the package, the task lists, the gold teacher, invalid
actions and determinism. One JVM serves the module (the expert on; valid actions switched per test)."""

from __future__ import annotations

import pytest

from duomem.envs.base import Environment
from duomem.errors import DataError, EngineError

SHORT = ("lifespan-longest-lived", 93)
"""A test variation whose gold path wins in 3 actions (open door to outside, go to outside, focus on crocodile)."""
LONG = ("boil", 23)
"""A test variation whose gold path needs 123 actions at seed 0: more than an agent's default 100."""


@pytest.fixture(scope="module")
def env(needs_scienceworld):
    from duomem.envs.scienceworld import ScienceWorldEnv

    env = ScienceWorldEnv(expert=True)
    yield env
    env.close()


def spec(task: str, variation: int):
    from duomem.envs.scienceworld_data import task_spec

    return task_spec(task, variation)


def test_table_matches_the_package(needs_scienceworld):
    """Task ids, names, topics and the simulator's own train/dev/test variations agree with the table."""
    from scienceworld import ScienceWorldEnv as PackageEnv
    from scienceworld.constants import TASKS as PACKAGE_TASKS

    from duomem.envs.scienceworld_data import EXPECTED_COUNTS, SPLITS, TASKS, TOPICS, topic_of, variations

    assert [(t["task_id"], t["task_name"]) for t in PACKAGE_TASKS] == [(v[0], k) for k, v in TASKS.items()]
    for t in PACKAGE_TASKS:
        assert TOPICS[topic_of(t["task_name"])].startswith(t["topic"]), t
    assert sorted({topic_of(t) for t in TASKS}) == list(range(1, 11))
    package = PackageEnv("", envStepLimit=100)
    try:
        assert sorted(package.get_task_names()) == sorted(TASKS)
        for task in TASKS:
            package.load(task, 0, "")
            simulator = {"train": package.get_variations_train(), "dev": package.get_variations_dev(),
                         "test": package.get_variations_test()}
            assert simulator == {s: variations(task, s) for s in SPLITS}, task
    finally:
        package.close()
    assert {s: sum(len(variations(t, s)) for t in TASKS) for s in SPLITS} == EXPECTED_COUNTS


def test_task_lists_and_fixed_samples(env, tmp_path):
    from duomem.envs.scienceworld_data import EXPECTED_COUNTS, SPLITS, TASKS, episodes, load_tasks, variations
    from duomem.envs.scienceworld_data import sample_variations as sample

    assert {s: len(episodes(s)) for s in SPLITS} == EXPECTED_COUNTS
    evaluation = episodes("test", per_task=10, seed=0)
    assert len(evaluation) == sum(min(10, len(variations(t, "test"))) for t in TASKS) == 271  # 9 tasks have <10
    assert evaluation == episodes("test", per_task=10, seed=0)
    assert evaluation != episodes("test", per_task=10, seed=1)
    picked = sample("find-animal", "test", 10, seed=0)
    assert picked == sorted(picked) and set(picked) <= set(variations("find-animal", "test")) and len(picked) == 10
    assert sample("power-component", "dev", 10) == [10, 11, 12, 13, 14]  # all 5 when fewer than 10

    tasks = load_tasks("test", ["boil", "find-plant"], per_task=2, env=env, data_root=tmp_path)
    assert [t.game_id for t in tasks] == [f"scienceworld/{task}/{v}" for task, v in
                                          episodes("test", ["boil", "find-plant"], per_task=2)]
    boil = tasks[0]
    assert (boil.split, boil.task_type, boil.game_file, boil.source) == ("test", "boil", "boil", "scienceworld")
    assert boil.params == {"task_id": "1-1", "topic": "1", "variation": boil.game_id.rsplit("/", 1)[1]}
    assert all(t.goal.startswith("Your task is to") for t in tasks)
    assert "boil" in boil.goal and "find" in tasks[-1].goal
    assert (tmp_path / "scienceworld" / "goals.json").is_file()
    again = load_tasks("test", ["boil", "find-plant"], per_task=2, data_root=tmp_path)  # from the cache: no JVM
    assert again == tasks

    with pytest.raises(DataError, match="unknown ScienceWorld task"):
        episodes("test", ["boiling"])
    with pytest.raises(DataError, match="unknown ScienceWorld split"):
        episodes("valid_unseen")


def test_gold_replay_wins(env):
    """A short gold path wins with every teacher action among the valid ones; a gold path longer than an agent's
    step limit wins under the teacher's."""
    from duomem.envs.scienceworld import GOLD_STEP_LIMIT, STEP_LIMIT

    assert isinstance(env, Environment) and env.max_steps == GOLD_STEP_LIMIT
    env.admissible = True
    obs = env.reset(spec(*SHORT), seed=0)
    assert obs.score == 0 and not obs.done and obs.expert_error is None
    assert "Your task is to find the animal with the longest life span" in obs.text
    steps = 0
    while not obs.done:
        assert obs.expert_action in obs.admissible_commands
        obs = env.step(obs.expert_action)
        steps += 1
    assert (obs.won, obs.score, steps, obs.expert_error) == (True, 100.0, 3, None)

    env.admissible = False
    gold = env.gold_path(spec(*LONG), seed=0)
    assert len(gold.actions) > STEP_LIMIT and gold.score == 100 and gold.tries == 1 and gold.seed == 0
    won, steps, error = env.expert_wins(spec(*LONG), seed=0)
    assert (won, steps, error) == (True, len(gold.actions), None)


def test_invalid_action_is_answered(env):
    env.admissible = False
    obs = env.reset(spec(*SHORT), seed=0)
    assert obs.admissible_commands == [] and "look around" in env.valid_actions()
    obs = env.step("fly to the moon")
    assert obs.text == "No known action matches that input."
    assert (obs.score, obs.won, obs.done) == (0.0, False, False)
    assert "left the gold path at step 1" in obs.expert_error and obs.expert_action is None
    obs = env.step("open door to outside")
    assert obs.text == "The door is now open." and obs.score == 0.0
    with pytest.raises(ValueError, match="empty action"):
        env.step("  ")
    obs = env.step("focus on door to outside")  # focusing on the wrong object fails the task
    assert (obs.score, obs.won, obs.done) == (-100.0, False, True)
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step("look around")


def test_reset_is_deterministic(env):
    """The same task, variation, seed and actions give the same observations, in this JVM and in a fresh one."""
    from duomem.envs.scienceworld import ScienceWorldEnv

    task = spec("find-animal", 230)
    actions = [*env.gold_path(task, seed=5).actions[:-1], "wait", "look around"]  # animals wander meanwhile

    def play(game) -> list[str]:
        obs = game.reset(task, seed=5)
        return [obs.text, *(game.step(action).text for action in actions)]

    env.admissible = False
    first = play(env)
    assert play(env) == first
    fresh = ScienceWorldEnv(admissible=False)
    try:
        assert play(fresh) == first
    finally:
        fresh.close()


def test_missing_java_is_one_line():
    from duomem.envs.scienceworld import ScienceWorldEnv

    with pytest.raises(EngineError, match="default-jre-headless"):
        ScienceWorldEnv(java="/nonexistent/java")


SHORT_TASKS = ("lifespan-longest-lived", "find-animal", "chemistry-mix")
"""Tasks whose gold paths are short (3-25 actions): the end-to-end run below plays one test variation of each."""


def test_prepare_and_play_the_gold_teacher_through_duomem_eval(needs_scienceworld, tmp_path, monkeypatch):
    """`duomem data prepare --env scienceworld` writes a task set; `duomem eval --policy expert` plays it through
    the one episode loop (every game won with a score of 100, records with the score, a mean score in the
    summary); rerunning resumes: nothing is played again."""
    import json

    from typer.testing import CliRunner

    from duomem.cli.main import app
    from duomem.envs.alfworld_data import load_tasks
    from duomem.envs.scienceworld_data import TOPICS, episodes, topic_of

    monkeypatch.setenv("DUOMEM_DATA", str(tmp_path / "data"))
    runner = CliRunner()
    done = runner.invoke(app, ["data", "prepare", "--env", "scienceworld", "--splits", "test", "--per-task", "2",
                               "--task-names", ",".join(SHORT_TASKS)])
    assert done.exit_code == 0, done.output + repr(done.exception)
    root = tmp_path / "data" / "scienceworld"
    tasks = load_tasks("test", root)  # what `duomem eval --tasks` reads
    assert [t.game_id for t in tasks] == [f"scienceworld/{t}/{v}" for t, v in episodes("test", SHORT_TASKS, 2)]
    assert {t.source for t in tasks} == {"scienceworld"} and all(t.goal.startswith("Your task") for t in tasks)
    assert json.loads((root / "prepare.json").read_text())["test"] == {"games": 6, "per_task": 2, "seed": 0,
                                                                       "tasks": 3}

    out = tmp_path / "run"
    command = ["eval", "--policy", "expert", "--tasks", str(root), "--split", "test", "--games", "3",
               "--out", str(out), "--no-progress"]
    done = runner.invoke(app, command)
    assert done.exit_code == 0, done.output + repr(done.exception)
    records = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert sorted(r["task_type"] for r in records) == sorted(SHORT_TASKS)
    assert all(r["won"] and r["score"] == 100.0 and r["error"] is None and r["expert_error"] is None
               for r in records)
    assert all(r["trajectory"]["steps"][-1]["kind"] == "action" for r in records)
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["n_won"], summary["mean_score"], summary["mean_score_ci95"]) == (3, 100.0, [100.0, 100.0])
    assert summary["max_steps_scienceworld"] == 1000 and summary["game_source"] == "scienceworld"
    assert set(summary["per_type"]) == set(SHORT_TASKS) and summary["per_type"]["find-animal"]["mean_score"] == 100
    assert list(summary["per_topic"]) == [TOPICS[n] for n in sorted({topic_of(t) for t in SHORT_TASKS})]
    assert "mean score" in done.output and "Mean score" in (out / "summary.md").read_text()

    before = (out / "episodes.jsonl").read_bytes()
    again = runner.invoke(app, command)
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert (out / "episodes.jsonl").read_bytes() == before  # resumed: nothing new played


def test_turn_limits_scores_and_old_records():
    """The turn limit rule; the think step keeps the score; records without a score (ALFWorld's committed ones)
    load, and their summaries have no mean score."""
    from duomem.agent.episode import Decision, EpisodeState
    from duomem.envs.base import MAX_STEPS, Observation, TaskSpec
    from duomem.envs.pool import turn_limit
    from duomem.envs.scienceworld import GOLD_STEP_LIMIT, STEP_LIMIT
    from duomem.eval.records import EpisodeRecord
    from duomem.eval.summary import summarize

    sw = spec(*SHORT)
    alf = TaskSpec(game_id="valid_unseen/x/trial", split="valid_unseen", task_type="pick", game_file="/x.tw-pddl")
    assert (turn_limit(sw, MAX_STEPS, expert=True), turn_limit(sw, MAX_STEPS, expert=False)) == (GOLD_STEP_LIMIT,
                                                                                                  STEP_LIMIT)
    assert turn_limit(sw, 80, expert=True) == 80 and turn_limit(alf, MAX_STEPS, expert=True) == MAX_STEPS

    state = EpisodeState(sw, "llm", "m", 0, 0, 10)
    state.begin(Observation(text="hi", admissible_commands=["look around"], score=25.0), 0.0)
    assert state.decide(Decision(kind="think", command="plan")) is None and state.obs.score == 25.0

    old = {"game_id": alf.game_id, "task_type": "pick", "split": alf.split, "seed": 0, "policy": "expert",
           "won": True, "steps": 5, "env_steps": 5, "thinks": 0, "invalid_actions": 0, "wall_s": 1.0,
           "trajectory": {"game_id": alf.game_id, "split": alf.split, "task_type": "pick", "goal": "",
                          "initial_observation": "", "policy": "expert"}}
    record = EpisodeRecord.model_validate(old)
    assert record.score is None
    summary = summarize([record], name="x", policy="expert", model=None, split="valid_unseen")
    assert "mean_score" not in summary and "per_topic" not in summary and list(summary["per_type"]) == ["pick"]
    failed = record.model_copy(update={"game_id": sw.game_id, "task_type": SHORT[0], "won": False, "score": -100.0})
    won = failed.model_copy(update={"won": True, "score": 100.0})
    summary = summarize([failed, won], name="y", policy="expert", model=None, split="test")
    assert summary["mean_score"] == 50.0 and summary["per_topic"]["Biology: lifespans"]["n"] == 2  # failed: 0
    low, high = summary["mean_score_ci95"]
    assert 0.0 <= low <= 50.0 <= high <= 100.0


def test_gold_paths_do_not_depend_on_the_jvms_history(needs_scienceworld):
    """The gold-path generator keeps state across generations in one JVM: each generation gets a fresh one, so
    a path generated after another task's equals the path a fresh environment generates."""
    from duomem.envs.scienceworld import ScienceWorldEnv

    task, seed = spec("change-the-state-of-matter-of", 22), 1034302363  # 118 actions instead of 136 before
    first, fresh = ScienceWorldEnv(expert=True, admissible=False), ScienceWorldEnv(expert=True, admissible=False)
    try:
        first.gold_path(spec(*LONG), seed=1367685655)
        after = first.gold_path(task, seed=seed)
        assert fresh.gold_path(task, seed=seed).actions == after.actions and after.score == 100
    finally:
        first.close()
        fresh.close()
