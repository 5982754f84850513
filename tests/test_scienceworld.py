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


# The LLM agent on ScienceWorld: its own instructions and few-shot examples, the same prompts in play and SFT data.

ALFWORLD_OBS = ("-= Welcome to TextWorld, ALFRED! =-\n\nYou are in the middle of a room. Looking quickly around you, "
                "you see a desk 1 and a drawer 1.\n\nYour task is to: put a mug on desk.")


def test_alfworld_prompt_is_unchanged():
    """ALFWorld's system prompt, first user turn (both few-shot sets, with a memory) and conversation are byte for
    byte what every committed result was played and trained with (sha256 taken before ScienceWorld's prompt)."""
    import hashlib
    import json

    from duomem.agent.prompts import INSTRUCTIONS, episode_conversation, instructions, task_prompt
    from duomem.agent.trajectory import Step, Trajectory

    def sha(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()

    assert sha(INSTRUCTIONS) == "3ff08ad1f5bd370869d1ea4059d1e731774b6a2215788501b0e3364f8633807d"
    assert instructions("alfworld") == instructions("generated") == INSTRUCTIONS
    first = {
        ("train", "pick"): "21149fbf53a44116ad44063e9496cb0cefc0f37a3ad78ebc8885f9147446e947",
        ("train", "pick_two"): "585b45f665a559d72b089fb9cda5126c7cd415abc29ee9350d73278efbcb89ea",
        ("train", "examine"): "ececd63ea1604abe3503472051d6f8aa608e1421e9d73ad6b7a0a379cd62dc0c",
        ("heldout", "pick"): "c16582abc88ee26b74e6fc0f8494c2fd1e83fb43e29e02b60e936d5f29cb041e",
        ("heldout", "pick_two"): "87f6e442f6d25a1e3d21e0a21a504399512d1ba9dbc563e2523c85fb3cfaa247",
        ("heldout", "examine"): "f0bd1b52cc76d2a11f8cd49ce3fbb92d1f63feae464095c2266426fdc25ca613",
    }
    for (fewshot, task_type), digest in first.items():
        assert sha(task_prompt(task_type, ALFWORLD_OBS, 2, ["mem one"], fewshot)) == digest, (fewshot, task_type)
        assert task_prompt(task_type, ALFWORLD_OBS, 2, ["mem one"], fewshot, source="generated") == \
            task_prompt(task_type, ALFWORLD_OBS, 2, ["mem one"], fewshot)
    traj = Trajectory(game_id="g", split="train", task_type="pick", goal="put a mug on desk",
                      initial_observation=ALFWORLD_OBS, policy="expert",
                      steps=[Step(kind="think", text="plan", observation="OK."),
                             Step(kind="action", text="go to desk 1", observation="On the desk 1, you see a mug 1.")])
    conv = episode_conversation(task_prompt("pick", ALFWORLD_OBS), traj)
    assert sha(json.dumps(conv)) == "e7af12eb77ee2a393a1d40ee4cd8a6575e64dec042f96030521ca8fea228098d"
    noted = episode_conversation(task_prompt("pick", ALFWORLD_OBS), traj, note=True)
    assert sha(json.dumps(noted)) == "500aa92c67a8fb6bce120cac637095ebb27d7234e29968b2945951f357a2055e"


def test_scienceworld_fewshot_examples():
    """The packaged examples: train variations only, at most two per task, short enough for an 8k prompt, each a
    won gold demonstration (a plan thought, then the actions); the instructions list the simulator's commands."""
    from importlib import resources

    from duomem.agent.prompts import (
        SCIENCEWORLD_FEWSHOT,
        SCIENCEWORLD_INSTRUCTIONS,
        fewshot_examples,
        instructions,
        task_prompt,
        transcript,
    )
    from duomem.envs.scienceworld_data import TASKS, split_of

    size = len(resources.files("duomem.agent").joinpath(SCIENCEWORLD_FEWSHOT).read_bytes())
    assert size < 300_000
    examples = fewshot_examples("train", "scienceworld")
    assert examples == fewshot_examples("heldout", "scienceworld") and set(examples) <= set(TASKS)
    assert len(examples) >= 20 and "pick" not in examples
    for task_type, trajs in examples.items():
        assert 1 <= len(trajs) <= 2
        for t in trajs:
            _, name, variation = t.game_id.split("/")
            assert (name, t.task_type, t.source, t.split) == (task_type, task_type, "scienceworld", "train")
            assert split_of(name, int(variation)) == "train" and t.won and t.policy == "expert"
            assert t.steps[0].kind == "think" and t.steps[0].text.startswith("To solve the task, I need to ")
            assert all(s.kind == "action" for s in t.steps[1:]) and len(transcript(t)) <= 5000
    assert instructions("scienceworld") == SCIENCEWORLD_INSTRUCTIONS
    for command in ("look around", "pick up", "focus on", "pour <object> into", "wait1", "connect", "think:"):
        assert command in SCIENCEWORLD_INSTRUCTIONS
    task_type = next(iter(examples))
    first = task_prompt(task_type, "This room is called the kitchen.", source="scienceworld")
    assert first.startswith(f"Here are {len(examples[task_type])} solved tasks" if len(examples[task_type]) == 2
                            else "Here is a solved task")
    assert transcript(examples[task_type][0]) in first
    assert first.endswith("### Your task\nThis room is called the kitchen.\n>")


def test_parsing_scienceworld_actions():
    """Thousands of valid actions: an exact or near-exact line is mapped onto one quickly; text that names none is
    played as written; an empty answer looks around; without valid actions every line is played as written."""
    import time

    from duomem.agent.parsing import parse_action

    things = [f"{c} {i}" for c in ("cup", "jar", "pot", "box", "wire", "battery") for i in range(9)]
    things += ["metal pot", "sink", "stove", "substance in metal pot", "door to kitchen", "orange in bowl"]
    valid = sorted({"look around", "inventory", "task", "wait", "wait1",
                    *(f"connect {a} to {b}" for a in things for b in things if a != b),
                    *(f"{v} {a}" for v in ("focus on", "look at", "pick up", "activate", "open") for a in things),
                    *(f"pour {a} into {b}" for a in things[:20] for b in things[:20] if a != b)})
    assert len(valid) > 3000
    start = time.perf_counter()
    assert parse_action("move metal pot to sink", []).command == "move metal pot to sink"
    cases = {"focus on substance in metal pot": ("focus on substance in metal pot", "exact"),
             "> Pick up the metal pot.": ("pick up metal pot", "normalised"),
             "connect wire 1 to battery 2": ("connect wire 1 to battery 2", "exact"),
             "go to the moon": ("go to the moon", "unmatched"),
             "examine substance in metal pot": ("examine substance in metal pot", "unmatched"),
             "": ("look around", "empty")}
    for line, (command, match) in cases.items():
        parsed = parse_action(line, valid)
        assert (parsed.kind, parsed.command, parsed.match) == ("action", command, match), line
    assert time.perf_counter() - start < 5  # a few ms per call on one core
    assert parse_action("think: the pot is on the stove", valid).kind == "think"
    free = parse_action("Open the door to kitchen", [])  # valid actions not listed: played as written
    assert (free.command, free.match, free.invalid) == ("Open the door to kitchen", "exact", False)


def test_sft_examples_of_a_scienceworld_gold_demonstration(needs_scienceworld, tmp_path):
    """A gold-teacher episode becomes a demonstration (kept as played, a plan thought first) and SFT examples with
    ScienceWorld's system prompt and few-shot examples: the messages the agent renders in play."""
    import json

    from duomem.agent.demonstrations import demonstration
    from duomem.agent.episode import EpisodeState
    from duomem.agent.prompts import SCIENCEWORLD_INSTRUCTIONS, TURN_END, fewshot_examples, transcript
    from duomem.agent.react import ReActAgent
    from duomem.distill.dataset import build_dataset, fewshot_game_ids
    from duomem.envs.base import Observation
    from duomem.eval.player import play
    from duomem.eval.spec import RolloutSpec

    task = spec(*SHORT)
    (record,) = play(RolloutSpec(policy="expert"), [(task, 0)])
    assert record.won and record.trajectory.source == "scienceworld"
    demo = demonstration(record.trajectory)
    assert demo is not None and demo.actions == record.trajectory.actions and len(demo.actions) == 3
    assert demo.steps[0].text == "To solve the task, I need to find the animal with the longest life span."
    path = tmp_path / "trajectories.jsonl"
    path.write_text(demo.model_dump_json() + "\n")
    meta = build_dataset(path, tmp_path / "sft", shots=2)
    assert (meta["examples"], meta["per_type"]) == (1, {SHORT[0]: 1})
    row = json.loads((tmp_path / "sft" / "train.jsonl").read_text())
    messages = row["messages"]
    assert messages[0] == {"role": "system", "content": SCIENCEWORLD_INSTRUCTIONS}
    shown = fewshot_examples("train", "scienceworld")[SHORT[0]]
    assert all(transcript(ex) in messages[1]["content"] for ex in shown)
    assert messages[1]["content"].endswith(f"### Your task\n{demo.initial_observation}{TURN_END}")
    assert [m["content"] for m in messages[2::2]] == [f"think: {demo.steps[0].text}", *demo.actions]
    assert {t.game_id for t in shown} <= fewshot_game_ids(2)

    class Unused:  # the agent's rendering needs no model call
        name, context_length = "none", 1 << 20

        def count_tokens(self, messages) -> int:
            return 0

    agent = ReActAgent(Unused(), shots=2)  # type: ignore[arg-type]
    state = EpisodeState(task, "llm", "none", 0, 0, 100)
    state.begin(Observation(text=demo.initial_observation, admissible_commands=[]), 0.0)
    agent.start(state)
    state.traj.steps = list(demo.steps)
    assert agent.messages(state)[:-1] == messages  # play's prompt, less the answer to the last command


def test_smollm2_plays_a_scienceworld_dev_episode(needs_scienceworld, smollm2, tmp_path, monkeypatch):
    """`duomem eval --model smollm2-135m` on a prepared ScienceWorld dev set plays a real episode through the one
    episode loop: the model is prompted with ScienceWorld's instructions and examples, the record has a score."""
    import json

    from typer.testing import CliRunner

    from duomem.agent.prompts import SCIENCEWORLD_INSTRUCTIONS, fewshot_examples, transcript
    from duomem.agent.react import ReActAgent
    from duomem.cli.main import app

    seen: list[list[dict]] = []
    render = ReActAgent.messages

    def recorded(self, state):
        messages = render(self, state)
        seen.append(messages)
        return messages

    monkeypatch.setattr(ReActAgent, "messages", recorded)
    monkeypatch.setenv("DUOMEM_DATA", str(tmp_path / "data"))
    runner = CliRunner()
    done = runner.invoke(app, ["data", "prepare", "--env", "scienceworld", "--splits", "dev", "--per-task", "1",
                               "--task-names", SHORT[0]])
    assert done.exit_code == 0, done.output + repr(done.exception)
    out = tmp_path / "run"
    done = runner.invoke(app, ["eval", "--model", smollm2, "--tasks", str(tmp_path / "data" / "scienceworld"),
                               "--split", "dev", "--games", "1", "--max-steps", "3", "--out", str(out),
                               "--no-progress"])
    assert done.exit_code == 0, done.output + repr(done.exception)
    (record,) = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert record["game_id"].startswith(f"scienceworld/{SHORT[0]}/") and record["split"] == "dev"
    assert record["error"] is None and isinstance(record["score"], float) and 1 <= record["steps"] <= 3
    assert record["trajectory"]["initial_observation"].endswith(record["trajectory"]["goal"])
    assert seen and all(m[0] == {"role": "system", "content": SCIENCEWORLD_INSTRUCTIONS} for m in seen)
    assert transcript(fewshot_examples("train", "scienceworld")[SHORT[0]][0]) in seen[0][1]["content"]


BOIL_GOLD = ["open door to kitchen", "go to kitchen", "look around", "pick up thermometer", "open cupboard",
             "pick up metal pot", "look around", "focus on marshmallow", "move marshmallow to metal pot",
             "pick up metal pot", "move metal pot to stove", "activate stove", "pick up metal pot",
             "open door to outside", "go to outside", "open door to foundry", "go to foundry", "open blast furnace",
             "move metal pot to blast furnace", "activate blast furnace", "examine marshmallow",
             "use thermometer in inventory on liquid marshmallow", "examine liquid marshmallow",
             "use thermometer in inventory on liquid marshmallow", "wait1", "wait1"]
"""A gold path of ``boil`` (a train variation's, as the gold teacher played it), shortened at its end."""


def test_plan_writer_turns_a_gold_path_into_one_step_per_room(needs_scienceworld):
    """The deterministic (``plan``) writer of ScienceWorld memories: per room, how to get there and what is done
    there in order; looking left out, a repeated command counted. Checked on a real gold episode and on a longer
    gold path."""
    from duomem.agent.trajectory import Step, Trajectory
    from duomem.eval.player import play
    from duomem.eval.spec import RolloutSpec
    from duomem.memory.writer import PlanWriter

    (record,) = play(RolloutSpec(policy="expert"), [(spec(*SHORT), 0)])
    memory = PlanWriter("both").write(record.trajectory)
    assert memory.script == "1. Go to the outside (open the doors on the way).\n2. In the outside: focus on crocodile."
    assert memory.actions == record.trajectory.actions and memory.writer == "plan"

    boil = Trajectory(game_id="scienceworld/boil/0", split="train", task_type="boil", goal="Your task is to boil "
                      "marshmallow.", initial_observation="", policy="expert", source="scienceworld", won=True,
                      steps=[Step(kind="action", text=a, observation="") for a in BOIL_GOLD])
    assert PlanWriter("both").write(boil).script.splitlines() == [
        "1. Go to the kitchen (open the doors on the way).",
        "2. In the kitchen: pick up thermometer, open cupboard, pick up metal pot, focus on marshmallow, move "
        "marshmallow to metal pot, pick up metal pot, move metal pot to stove, activate stove, pick up metal pot.",
        "3. Go to the foundry through the outside (open the doors on the way).",
        "4. In the foundry: open blast furnace, move metal pot to blast furnace, activate blast furnace, use "
        "thermometer in inventory on liquid marshmallow (2 times), wait (2 times).",
    ]


@pytest.mark.slow
def test_the_pipeline_on_scienceworld(needs_scienceworld, needs_torch, smollm2, duomem_home, tmp_path, monkeypatch):
    """`duomem run` with ``data.source: scienceworld`` at toy scale: the gold teacher's train episodes, its memories
    by the plan writer (a step per room), the LoRAs on the gold demonstrations, the rows on test variations and a
    report with per-topic tables, mean scores and paired mean-score differences; a rerun does no work."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from typer.testing import CliRunner

    from duomem.cli.main import app

    monkeypatch.setenv("DUOMEM_DATA", str(tmp_path / "data"))
    done = CliRunner().invoke(app, ["data", "prepare", "--env", "scienceworld", "--splits", "train,test",
                                    "--per-task", "2", "--task-names", ",".join(SHORT_TASKS[:2])])
    assert done.exit_code == 0, done.output + repr(done.exception)
    config = tmp_path / "sw.yaml"
    config.write_text(f"""name: sw-ci
output: {tmp_path / "run"}
student: {{model: smollm2-135m, shots: 0}}
teacher: {{policy: expert, samples_per_task: 1}}
memory: {{teacher_writer: plan, top_k: 1, games: 2}}
data: {{source: scienceworld, train_split: train, train_games: 2, eval_split: test, eval_games: 2, tune_split: dev}}
lora: {{rank: 4, epochs: 1, max_steps: 1, batch_size: 1, max_length: 2048, device: cpu}}
eval: {{max_steps: 2, workers: 1, k_sweep: [], configs: [teacher_memory, duomem, teacher]}}
""")
    cmd = [sys.executable, "-m", "duomem.cli", "run", str(config), "--no-progress"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    rows = report["configs"]
    assert set(rows) == {"teacher_memory", "duomem", "teacher"} and report["teacher"].startswith("ScienceWorld gold")
    assert rows["teacher"]["mean_score"] == 50.0  # halfway along each 3-4 action gold path in the 2 turns allowed
    assert all(r["n_episodes"] == 2 and r["mean_score"] is not None and r["per_topic"] for r in rows.values())
    (duo,) = [p for p in report["paired"] if (p["a"], p["b"]) == ("duomem", "teacher_memory")]
    assert duo["n_games"] == 2 and duo["score_difference"] is not None
    bank = report["artifacts"]["teacher_bank"]
    memories = [json.loads(line) for line in (Path(bank["bank"]) / "memories.jsonl").read_text().splitlines()]
    assert len(memories) == 2 and all(m["script"].startswith("1. Go to the ") for m in memories)
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "Per topic" in markdown and "mean score" in markdown
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((tmp_path / "run" / "stages_executed.json").read_text()) == []
