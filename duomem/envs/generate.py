"""Offline ALFWorld-compatible task generator: new rooms and tasks from the floor plans shipped with ``alfworld``.

Each task is a trial folder in ALFWorld's ``json_2.1.1`` layout (``initial_state.pddl``, ``traj_data.json``,
``game.tw-pddl``), so ALFWorld's own domain, grammar, demangler and handcoded expert play it unchanged. A room is
built from one of the 120 floor plans: its receptacles (ids and poses from ``FloorPlan*-openable.json``; the
furniture that file lacks is placed on the plan's navigable grid, the same way for every task of that plan), its
object types (``FloorPlan*-objects.json``) spread over receptacles that ALFRED's compatibility table allows
(``VAL_RECEPTACLE_OBJECTS``), one to three copies each, and its fixtures (chairs, windows, lamps...). Everything is
drawn from local RNGs seeded by ``(seed, split, slot, attempt)``, so the same arguments give byte-identical files
whatever the number of worker processes.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import re
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from duomem import settings
from duomem.envs.alfworld_data import (
    GAME_FILE,
    PROBLEM_FILE,
    TASK_TYPE_SHORT,
    TRAJ_FILE,
    build_game_file,
    goal_of,
    task_params,
    write_index,
)
from duomem.envs.base import TASK_TYPES, TaskSpec
from duomem.errors import ConfigError, DataError
from duomem.jsonl import atomic_write_json, atomic_write_text

GEN_SPLITS: tuple[str, ...] = ("train", "test")
LONG_TYPE: dict[str, str] = {short: long for long, short in TASK_TYPE_SHORT.items()}
GenerateVerify = Literal["expert", "load", "none"]
VERIFY_MODES: tuple[str, ...] = get_args(GenerateVerify)
MAX_STEPS = 50
"""The expert must win a generated game within this many actions."""
MAX_ATTEMPTS = 25
"""Samples tried per task before giving up."""
TEST_FRACTION = 0.2
"""Share of each room type's floor plans held out for the test split by default."""

COPIES = (1, 2, 3)
COPY_WEIGHTS = (43, 32, 25)  # copies of an object type in the official rooms: 43% one, 32% two, 25% three
PICK_TWO_COPIES = (2, 3, 4)
PICK_TWO_WEIGHTS = (40, 37, 23)
APPLIANCE: dict[str, str] = {"clean": "SinkBasin", "heat": "Microwave", "cool": "Fridge"}
AFFORDANCE: dict[str, str] = {"clean": "Cleanable", "heat": "Heatable", "cool": "Coolable"}
PARENT_EXCLUDED = frozenset({"SinkBasin", "BathtubBasin", "Toaster", "LaundryHamper", "TowelHolder",
                             "HandTowelHolder", "TVStand"})
"""Receptacles never used as a task's destination in the official games."""
LAMP = "DeskLamp"
LAMP_RECEPTACLES: tuple[str, ...] = ("CoffeeTable", "Desk", "Dresser", "Shelf", "SideTable")
"""Where desk lamps stand in the official rooms (ToggleObject needs the lamp to be in a receptacle)."""
FLOOR_PICKUPABLE = frozenset({"Boots", "PaperTowelRoll", "ScrubBrush", "TeddyBear"})
"""Pickupable in the official games but in no receptacle's list: they lie on the floor."""
HORIZONS: tuple[int, ...] = (0, 15, 30, 45, 60)
STEP = 0.25  # metres per grid unit of a location
FACING: dict[int, tuple[int, int]] = {0: (0, 1), 1: (1, 0), 2: (0, -1), 3: (-1, 0)}

Loc = tuple[int, int, int, int]
"""``loc|x|z|rotation|horizon``: grid position, quarter turns, camera pitch."""


# --------------------------------------------------------------------------------------------------------------
# ALFRED's tables, read from the installed alfworld package


@dataclass(frozen=True)
class Tables:
    """Object/receptacle knowledge from ``alfworld.gen.constants`` and ``alfworld.gen.goal_library``."""

    object_types: tuple[str, ...]
    """Every object class ALFRED knows (``constants.OBJECTS``)."""
    receptacle_types: frozenset[str]
    """Fixed receptacles (``RECEPTACLES`` less the movable ones)."""
    movable: frozenset[str]
    pickupable: frozenset[str]
    can_contain: dict[str, frozenset[str]]
    affordances: dict[str, frozenset[str]]
    openable: frozenset[str]
    goal_rooms: dict[str, frozenset[str]]
    room_of_scene: dict[int, str]
    goal_pddl: dict[str, str]
    templates: dict[str, tuple[str, ...]]


@functools.cache
def tables() -> Tables:
    """ALFRED's tables (imported once per process)."""
    settings.ensure_alfworld_cache_env()
    try:
        import alfworld.gen.constants as c
        import alfworld.gen.goal_library as glib
    except ImportError as exc:
        raise DataError(f"cannot import alfworld ({exc}); run `pip install alfworld==0.4.2`") from exc

    movable = frozenset(c.MOVABLE_RECEPTACLES)
    fixed = frozenset(c.RECEPTACLES) - movable
    objects = tuple(c.OBJECTS)
    in_tables = set().union(*c.VAL_RECEPTACLE_OBJECTS.values())
    pickupable = frozenset((in_tables | FLOOR_PICKUPABLE) & set(objects)) - fixed
    can_contain = {r: frozenset(o for o in objs if o in pickupable)
                   for r, objs in c.VAL_RECEPTACLE_OBJECTS.items() if r in fixed}
    rooms = {n: room for room, numbers in c.SCENE_TYPE.items() for n in numbers}
    long_types = [LONG_TYPE[t] for t in TASK_TYPES]
    return Tables(
        object_types=objects,
        receptacle_types=fixed,
        movable=movable,
        pickupable=pickupable,
        can_contain=can_contain,
        affordances={k: frozenset(v) for k, v in c.VAL_ACTION_OBJECTS.items()},
        openable=frozenset(c.OPENABLE_CLASS_LIST),
        goal_rooms={t: frozenset(c.GOALS_VALID[t]) for t in long_types},
        room_of_scene=rooms,
        goal_pddl={t: glib.gdict[t]["pddl"] for t in long_types},
        templates={t: tuple(glib.gdict[t]["templates"]) for t in long_types},
    )


def layouts_dir() -> Path:
    """``alfworld/gen/layouts`` of the installed package."""
    spec = importlib.util.find_spec("alfworld")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the alfworld package is not installed; run `pip install alfworld==0.4.2`")
    path = Path(next(iter(spec.submodule_search_locations))) / "gen" / "layouts"
    if not path.is_dir():
        raise DataError(f"{path} is missing: the alfworld install has no floor-plan layouts; reinstall alfworld")
    return path


@functools.cache
def all_scenes() -> tuple[int, ...]:
    """Floor-plan numbers with a layout (1-30 kitchens, 201-230 living rooms, 301-330 bedrooms, 401-430 baths)."""
    found = (re.fullmatch(r"FloorPlan(\d+)-objects\.json", p.name) for p in layouts_dir().iterdir())
    return tuple(sorted(int(m.group(1)) for m in found if m))


# --------------------------------------------------------------------------------------------------------------
# Floor plans


@dataclass(frozen=True)
class Receptacle:
    id: str
    """ALFRED object id, e.g. ``Cabinet|+00.68|+00.50|-02.20`` or ``Sink|...|SinkBasin``."""
    rtype: str
    loc: Loc


@dataclass(frozen=True)
class Scene:
    """What a floor plan offers: its room type, object types, receptacles and navigable points."""

    num: int
    room: str
    types: frozenset[str]
    receptacles: tuple[Receptacle, ...]
    points: tuple[tuple[float, float], ...]

    @functools.cached_property
    def receptacle_types(self) -> frozenset[str]:
        return frozenset(r.rtype for r in self.receptacles)


def _coord(v: float) -> str:
    v = round(v, 2)
    return "00.00" if v == 0 else f"{v:+06.2f}"


def _loc_from_pose(x: float, z: float, rotation: float, horizon: float) -> Loc:
    return (round(x / STEP), round(z / STEP), round(rotation / 90) % 4, round(horizon))


def _place_near(rng: random.Random, points: tuple[tuple[float, float], ...], taken: set[Loc],
                horizon: int | None = None) -> tuple[Loc, tuple[float, float]]:
    """A free location on the navigable grid and the spot it faces (0.75 m ahead)."""
    for _ in range(200):
        px, pz = rng.choice(points)
        rot = rng.randrange(4)
        loc = _loc_from_pose(px, pz, rot * 90, horizon if horizon is not None else rng.choice(HORIZONS))
        if loc not in taken:
            dx, dz = FACING[rot]
            return loc, (px + 0.75 * dx, pz + 0.75 * dz)
    raise DataError(f"no free spot left on a floor plan of {len(points)} grid points; use other scenes")


@functools.cache
def load_scene(num: int) -> Scene:
    """The floor plan ``num``: receptacles from the layout, plus the fixed receptacles its object list names but
    its layout lacks (coffee machines, stove burners, towel holders...), placed once per plan with an RNG seeded by
    the plan number."""
    t = tables()
    base = layouts_dir() / f"FloorPlan{num}"
    try:
        types = frozenset(json.loads(Path(f"{base}-objects.json").read_text()))
        poses: dict[str, list[float]] = json.loads(Path(f"{base}-openable.json").read_text())
        import numpy as np

        grid = np.load(f"{base}-layout.npy")
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read floor plan {num} from {layouts_dir()}: {exc}; reinstall alfworld") from exc
    points = tuple(sorted((float(x), float(z)) for x, z in grid.tolist()))
    receptacles: list[Receptacle] = []
    for rid in sorted(poses):
        parts = rid.split("|")
        rtype = parts[4] if len(parts) == 5 else parts[0]
        if rtype in t.receptacle_types:
            receptacles.append(Receptacle(rid, rtype, _loc_from_pose(*poses[rid])))
    present = {r.rtype for r in receptacles}
    taken = {r.loc for r in receptacles}
    ids = {r.id for r in receptacles}
    for rtype in sorted(types & t.receptacle_types - present):
        rng = random.Random(f"duomem-floorplan-{num}-{rtype}")
        for _ in range(4 if rtype == "StoveBurner" else 1):
            loc, (x, z) = _place_near(rng, points, taken)
            rid = f"{rtype}|{_coord(x)}|{_coord(rng.uniform(0.0, 1.5))}|{_coord(z)}"
            if rtype in ("SinkBasin", "BathtubBasin"):
                rid = f"{rtype.removesuffix('Basin')}|{rid.split('|', 1)[1]}|{rtype}"
            if rid in ids:
                continue
            ids.add(rid)
            taken.add(loc)
            receptacles.append(Receptacle(rid, rtype, loc))
    room = t.room_of_scene.get(num, "")
    return Scene(num, room, types, tuple(sorted(receptacles, key=lambda r: r.id)), points)


# --------------------------------------------------------------------------------------------------------------
# Task sampling


@dataclass(frozen=True)
class Draw:
    """One task: type (short name), floor plan, target object, destination receptacle or lamp."""

    task_type: str
    scene: int
    obj: str
    parent: str = ""
    toggle: str = ""


def _target_spots(scene: Scene, obj: str, parent: str) -> list[Receptacle]:
    """Receptacles where a target may start: compatible and not of the destination's type."""
    t = tables()
    return [r for r in scene.receptacles if r.rtype != parent and obj in t.can_contain.get(r.rtype, ())]


@functools.cache
def candidates(scene_num: int, task_type: str) -> tuple[tuple[str, str], ...]:
    """(object, destination or lamp) pairs a task of ``task_type`` can use in a floor plan; empty if none."""
    t = tables()
    scene = load_scene(scene_num)
    if scene.room not in t.goal_rooms[LONG_TYPE[task_type]]:
        return ()
    objects = sorted(scene.types & t.pickupable)
    if task_type == "examine":
        if LAMP not in scene.types or not scene.receptacle_types & set(LAMP_RECEPTACLES):
            return ()
        return tuple((o, LAMP) for o in objects if _target_spots(scene, o, ""))
    appliance = APPLIANCE.get(task_type)
    if appliance and appliance not in scene.receptacle_types:
        return ()
    if task_type in AFFORDANCE:
        objects = [o for o in objects if o in t.affordances[AFFORDANCE[task_type]]]
    pairs = []
    for obj in objects:
        for parent in sorted(scene.receptacle_types - PARENT_EXCLUDED - {appliance}):
            if obj in t.can_contain.get(parent, ()) and _target_spots(scene, obj, parent):
                pairs.append((obj, parent))
    return tuple(pairs)


def draw_task(rng: random.Random, task_type: str, scenes: list[int]) -> Draw | None:
    """A random feasible task of ``task_type`` in one of ``scenes`` (None if no scene allows one)."""
    usable = [s for s in scenes if candidates(s, task_type)]
    if not usable:
        return None
    scene = rng.choice(usable)
    pairs = candidates(scene, task_type)
    obj = rng.choice(sorted({o for o, _ in pairs}))
    dest = rng.choice([d for o, d in pairs if o == obj])
    if task_type == "examine":
        return Draw(task_type, scene, obj, toggle=dest)
    return Draw(task_type, scene, obj, parent=dest)


# --------------------------------------------------------------------------------------------------------------
# Rooms


@dataclass
class Thing:
    id: str
    otype: str
    loc: Loc
    parent: str | None = None


@dataclass
class Room:
    scene: Scene
    things: list[Thing] = field(default_factory=list)
    agent: Loc = (0, 0, 0, 30)


def _world(rid: str) -> tuple[float, float, float]:
    parts = rid.split("|")
    return float(parts[1]), float(parts[2]), float(parts[3])


def populate(rng: random.Random, draw: Draw) -> Room:
    """Fill the floor plan of ``draw``: every pickupable type of the plan in one to three copies (the target as the
    task needs) in compatible receptacles, targets never in the destination's type, and the plan's fixtures."""
    t = tables()
    scene = load_scene(draw.scene)
    room = Room(scene)
    ids: set[str] = {r.id for r in scene.receptacles}
    taken = {r.loc for r in scene.receptacles}
    by_type: dict[str, list[Receptacle]] = {}
    for r in scene.receptacles:
        by_type.setdefault(r.rtype, []).append(r)

    def new_id(otype: str, x: float, y: float, z: float) -> str:
        for _ in range(100):
            oid = f"{otype}|{_coord(x + rng.uniform(-0.4, 0.4))}|{_coord(y + rng.uniform(0.0, 0.3))}|" \
                  f"{_coord(z + rng.uniform(-0.4, 0.4))}"
            if oid not in ids:
                ids.add(oid)
                return oid
        raise DataError(f"cannot find a free id for a {otype} in floor plan {scene.num}")

    def put_in(otype: str, recep: Receptacle) -> None:
        room.things.append(Thing(new_id(otype, *_world(recep.id)), otype, recep.loc, recep.id))

    def put_free(otype: str) -> None:
        loc, (x, z) = _place_near(rng, scene.points, taken)
        taken.add(loc)
        room.things.append(Thing(new_id(otype, x, rng.uniform(0.0, 1.5), z), otype, loc))

    for otype in sorted(scene.types & t.pickupable):
        if otype == draw.obj:
            spots = _target_spots(scene, otype, draw.parent)
            many = (PICK_TWO_COPIES, PICK_TWO_WEIGHTS) if draw.task_type == "pick_two" else (COPIES, COPY_WEIGHTS)
            count = rng.choices(*many)[0]
        else:
            spots = [r for r in scene.receptacles if otype in t.can_contain.get(r.rtype, ())]
            count = rng.choices(COPIES, COPY_WEIGHTS)[0]
        for _ in range(count):
            if spots:
                put_in(otype, rng.choice(spots))
            else:
                put_free(otype)
    lamp_spots = [r for name in LAMP_RECEPTACLES for r in by_type.get(name, [])]
    fixtures = sorted(scene.types & set(t.object_types) - t.pickupable - t.receptacle_types)
    for otype in fixtures:
        if otype == LAMP and lamp_spots:
            put_in(otype, rng.choice(lamp_spots))
            continue
        if otype == "StoveKnob":
            count = max(1, len(by_type.get("StoveBurner", [])))
        elif otype in ("Chair", "Window"):
            count = rng.choice((1, 2))
        else:
            count = 1
        for _ in range(count):
            put_free(otype)
    room.agent, _ = _place_near(rng, scene.points, taken, horizon=30)
    return room


# --------------------------------------------------------------------------------------------------------------
# PDDL


def mangle(name: str) -> str:
    """ALFRED id -> PDDL name, as ALFRED writes them (``|`` -> ``_bar_``, ``-`` -> ``_minus_``...)."""
    for char, word in (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        name = name.replace(char, word)
    return name


def loc_name(loc: Loc) -> str:
    return mangle("loc|" + "|".join(str(v) for v in loc))


def render_problem(task_id: str, draw: Draw, room: Room) -> str:
    """``initial_state.pddl`` in the layout of ALFWorld's own problems (same sections, predicates and goal)."""
    t = tables()
    ind = "\n        "
    obj_types = sorted(set(t.object_types) - t.receptacle_types)
    things = sorted(room.things, key=lambda x: x.id)
    receps = room.scene.receptacles
    locs = sorted({r.loc for r in receps} | {x.loc for x in things} | {room.agent})
    declared = (["agent1 - agent"] + [f"{o} - object" for o in obj_types] + [f"{o}Type - otype" for o in obj_types]
                + [f"{r}Type - rtype" for r in sorted(t.receptacle_types)]
                + [f"{mangle(x.id)} - object" for x in things] + [f"{mangle(r.id)} - receptacle" for r in receps]
                + [f"{loc_name(loc)} - location" for loc in locs])
    present = sorted({x.otype for x in things if x.otype in t.pickupable})
    rtypes = sorted({r.rtype for r in receps})

    def facts(pred: str, items: Iterable[Thing]) -> list[str]:
        return [f"({pred} {mangle(x.id)})" for x in items]

    def able(kind: str) -> list[Thing]:
        return [x for x in things if x.otype in t.affordances[kind]]

    in_fridge = {r.id for r in receps if r.rtype == "Fridge"}
    init: list[str] = (
        [f"(receptacleType {mangle(r.id)} {r.rtype}Type)" for r in receps]
        + [f"(objectType {mangle(x.id)} {x.otype}Type)" for x in things]
        + [f"(canContain {r}Type {o}Type)" for r in rtypes for o in present if o in t.can_contain.get(r, ())]
        + facts("pickupable", [x for x in things if x.otype in t.pickupable])
        + facts("isReceptacleObject", [x for x in things if x.otype in t.movable])
        + [f"(openable {mangle(r.id)})" for r in receps if r.rtype in t.openable]
        + [f"(atLocation agent1 {loc_name(room.agent)})"]
        + facts("cleanable", able("Cleanable")) + facts("heatable", able("Heatable"))
        + facts("coolable", able("Coolable"))
        # like ALFRED: a target that starts in a fridge is already cool
        + facts("isCool", [x for x in things if x.otype == draw.obj and x.parent in in_fridge])
        + facts("toggleable", [x for x in things if x.otype == LAMP]) + facts("sliceable", able("Sliceable"))
        + [f"(inReceptacle {mangle(x.id)} {mangle(x.parent)})" for x in things if x.parent]
        + [f"(receptacleAtLocation {mangle(r.id)} {loc_name(r.loc)})" for r in receps]
        + [f"(objectAtLocation {mangle(x.id)} {loc_name(x.loc)})" for x in things]
    )
    goal = t.goal_pddl[LONG_TYPE[draw.task_type]].replace("#", "-").format(
        obj=draw.obj, recep=draw.parent, toggle=draw.toggle)
    return (f"\n(define (problem plan_{task_id})\n(:domain alfred)\n(:objects{ind}" + ind.join(declared)
            + f"{ind})\n(:init{ind}" + ind.join(init) + f"{ind})\n{goal.strip()}\n")


def _words(name: str) -> str:
    """``AlarmClock`` -> ``alarm clock``."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", name).lower()


def descriptions(draw: Draw) -> list[str]:
    """Task sentences from ALFRED's goal templates, with the names in plain words."""
    out = []
    for template in tables().templates[LONG_TYPE[draw.task_type]]:
        text = template.format(obj=_words(draw.obj), recep=_words(draw.parent), toggle=_words(draw.toggle),
                               mrecep="")
        out.append(re.sub(r"\ba (?=[aeiou])", "an ", text))
    return out


def task_folder(draw: Draw) -> str:
    """``<task type>-<Object>-None-<Receptacle or lamp>-<floor plan>``, as ALFWorld names its task folders."""
    return f"{LONG_TYPE[draw.task_type]}-{draw.obj}-None-{draw.parent or draw.toggle}-{draw.scene}"


def write_trial(trial: Path, draw: Draw, room: Room) -> None:
    """Write one trial folder (its name is the task id): problem, ``traj_data.json`` and the built game file."""
    task_id = trial.name
    long_type = LONG_TYPE[draw.task_type]
    traj = {
        "task_id": task_id,
        "task_type": long_type,
        "pddl_params": {"mrecep_target": "", "object_sliced": False, "object_target": draw.obj,
                        "parent_target": draw.parent, "toggle_target": draw.toggle},
        "scene": {"floor_plan": f"FloorPlan{draw.scene}", "scene_num": draw.scene},
        "turk_annotations": {"anns": [{"task_desc": d} for d in descriptions(draw)]},
    }
    atomic_write_text(trial / PROBLEM_FILE, render_problem(task_id, draw, room))
    atomic_write_json(trial / TRAJ_FILE, traj)
    build_game_file(trial)


# --------------------------------------------------------------------------------------------------------------
# Verification and the per-task job


def verify_game(task: TaskSpec, verify: str, seed: int) -> tuple[str, str] | None:
    """``(reason, detail)`` if the game fails the check, else None. ``load``: it loads, resets, offers commands and
    is not already won; ``expert``: also, ALFWorld's handcoded expert wins it within :data:`MAX_STEPS`."""
    if verify == "none":
        return None
    from duomem.envs.alfworld import AlfworldEnv

    env = AlfworldEnv(max_steps=MAX_STEPS, expert=verify == "expert")
    try:
        try:
            obs = env.reset(task, seed=seed)
        except Exception as exc:
            return "load error", f"{type(exc).__name__}: {exc}"
        if not obs.admissible_commands:
            return "load error", "no admissible commands after reset"
        if obs.won:
            return "solved at start", "the goal holds before any action"
        if verify == "expert":
            try:
                won, steps, error = env.expert_wins(task, seed=seed, max_steps=MAX_STEPS)
            except Exception as exc:
                return "expert error", f"{type(exc).__name__}: {exc}"
            if not won and error:
                return "expert error", error
            if not won:
                return "expert failed", f"not won in {steps} steps"
    finally:
        env.close()
    return None


@dataclass(frozen=True)
class SlotJob:
    out: str
    split: str
    index: int
    task_type: str
    scenes: tuple[int, ...]
    seed: int
    verify: str


@dataclass
class SlotResult:
    index: int
    row: str | None = None
    """The task's index row (TaskSpec JSON), or None if every attempt failed."""
    rejections: list[tuple[str, str]] = field(default_factory=list)


def task_id_of(seed: int, split: str, index: int) -> str:
    return f"trial_G{seed}_{split}_{index:06d}"


def make_slot(job: SlotJob) -> SlotResult:
    """Sample, write and check one task, resampling (with a fresh RNG) until it passes or attempts run out."""
    from duomem.seeds import episode_seed

    result = SlotResult(job.index)
    split_dir = Path(job.out) / "json_2.1.1" / job.split
    task_id = task_id_of(job.seed, job.split, job.index)
    for attempt in range(MAX_ATTEMPTS):
        rng = random.Random(f"duomem-generate:{job.seed}:{job.split}:{job.index}:{attempt}")
        draw = draw_task(rng, job.task_type, list(job.scenes))
        if draw is None:
            result.rejections.append(("no valid placement", f"no scene allows a {job.task_type} task"))
            break
        try:
            room = populate(rng, draw)
        except DataError as exc:
            result.rejections.append(("no valid placement", f"{task_folder(draw)}: {exc}"))
            continue
        trial = split_dir / task_folder(draw) / task_id
        try:
            write_trial(trial, draw, room)
            traj = json.loads((trial / TRAJ_FILE).read_text())
            game = trial / GAME_FILE
            task = TaskSpec(game_id=f"{job.split}/{task_folder(draw)}/{task_id}", split=job.split,
                            task_type=job.task_type, game_file=str(game.resolve()), goal=goal_of(game),
                            params=task_params(traj), source="generated")
        except DataError as exc:
            failure: tuple[str, str] | None = ("build error", str(exc))
        else:
            failure = verify_game(task, job.verify, episode_seed(job.seed, task.game_id, 0))
        if failure is None:
            result.row = task.model_dump_json()
            return result
        result.rejections.append((failure[0], f"{task_folder(draw)}: {failure[1]}"))
        shutil.rmtree(trial, ignore_errors=True)
    return result


# --------------------------------------------------------------------------------------------------------------
# Arguments


def _task_types(task_types: list[str] | None) -> list[str]:
    if not task_types:
        return list(TASK_TYPES)
    chosen = set()
    for name in task_types:
        short = TASK_TYPE_SHORT.get(name, name.strip())
        if short not in TASK_TYPES:
            raise ConfigError(f"unknown task type {name!r}; choose from {', '.join(TASK_TYPES)}")
        chosen.add(short)
    return [t for t in TASK_TYPES if t in chosen]


def _check_scenes(scenes: Iterable[int], what: str) -> list[int]:
    known = set(all_scenes())
    out = sorted(set(scenes))
    unknown = [s for s in out if s not in known]
    if unknown:
        raise ConfigError(f"unknown {what} {', '.join(map(str, unknown))}; floor plans are 1-30 (kitchens), "
                          "201-230 (living rooms), 301-330 (bedrooms) and 401-430 (bathrooms)")
    if not out:
        raise ConfigError(f"no {what} given")
    return out


def split_scenes(seed: int, scenes: list[int] | None, test_scenes: list[int] | None,
                 with_test: bool) -> dict[str, list[int]]:
    """Floor plans per split: test plans are held out of training (a seeded ~20% of each room type by default)."""
    pool = _check_scenes(scenes, "scene") if scenes is not None else list(all_scenes())
    if not with_test:
        return {"train": pool}
    if test_scenes is not None:
        test = _check_scenes(test_scenes, "test scene")
        if scenes is None:
            pool = [s for s in pool if s not in set(test)]
        overlap = sorted(set(pool) & set(test))
        if overlap:
            raise ConfigError(f"test scenes overlap train scenes ({', '.join(map(str, overlap))}); "
                              "give disjoint --scenes and --test-scenes")
        if not pool:
            raise ConfigError("every floor plan is a test scene; leave some for training")
        return {"train": pool, "test": test}
    if len(pool) < 2:
        raise ConfigError(f"{len(pool)} scene is not enough to hold out test scenes; give at least 2 scenes or "
                          "--test-scenes")
    rng = random.Random(f"duomem-test-scenes:{seed}")
    rooms = tables().room_of_scene
    test: list[int] = []
    for room in sorted({rooms.get(s, "") for s in pool}):
        group = [s for s in pool if rooms.get(s, "") == room]
        rng.shuffle(group)
        test += group[:round(TEST_FRACTION * len(group))]
    if not test:
        test = [rng.choice(pool)]
    if len(test) == len(pool):
        test = test[:-1]
    test_set = set(test)
    return {"train": [s for s in pool if s not in test_set], "test": sorted(test)}


def _check_feasible(split: str, task_types: list[str], scenes: list[int]) -> None:
    for task_type in task_types:
        if not any(candidates(s, task_type) for s in scenes):
            need = {"clean": "a kitchen or bathroom with a sink", "heat": "a kitchen with a microwave",
                    "cool": "a kitchen with a fridge", "examine": "a bedroom or living room with a desk lamp"}
            raise ConfigError(f"no {split} scene allows {task_type} tasks (needs "
                              f"{need.get(task_type, 'a compatible object and receptacle')}); add scenes or "
                              "drop the task type")


MARKER = ".duomem-generated"


def _prepare_out(out: Path) -> None:
    """Make ``out`` ready: new, or written by this generator before (its splits are replaced)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder")
    data = out / "json_2.1.1"
    if data.is_dir() and any(data.iterdir()) and not (data / MARKER).is_file():
        raise ConfigError(f"{data} holds task data that this generator did not write; choose another --out")
    for split in GEN_SPLITS:
        shutil.rmtree(data / split, ignore_errors=True)
        (out / "index" / f"{split}.jsonl").unlink(missing_ok=True)
    (out / "generation.json").unlink(missing_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    (data / MARKER).write_text("written by duomem.envs.generate; rerunning it replaces the splits here\n")


def _compact_json(data: dict) -> str:
    """Indented JSON with lists of numbers on one line."""
    text = json.dumps(data, indent=2)
    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text) + "\n"


# --------------------------------------------------------------------------------------------------------------
# Entry point


def generate_tasks(out: Path, n: int, seed: int = 0, task_types: list[str] | None = None,
                   scenes: list[int] | None = None, test_n: int = 0, test_scenes: list[int] | None = None,
                   verify: GenerateVerify = "expert", workers: int = 1, show_progress: bool = True) -> dict:
    """Generate ``n`` train tasks (and ``test_n`` test tasks on held-out floor plans) under ``out``.

    Writes ``out/json_2.1.1/<split>/<task>/<trial>/``, ``out/index/<split>.jsonl`` (TaskSpec rows, ``source`` =
    ``generated``, readable with ``load_tasks(split, out)``) and ``out/generation.json`` (counts per split and type,
    rejections and their reasons, seed, scenes per split), which is also returned (plus ``seconds``). Task types
    take turns (round-robin in :data:`TASK_TYPES` order). ``verify``: ``expert`` (the handcoded expert must win
    within 50 steps), ``load`` (the game must load and reset) or ``none``; a failing sample is redrawn and counted.
    """
    if n < 1:
        raise ConfigError(f"--n must be at least 1, not {n}")
    if test_n < 0:
        raise ConfigError(f"--test-n must be 0 or more, not {test_n}")
    if verify not in VERIFY_MODES:
        raise ConfigError(f"--verify must be one of {', '.join(VERIFY_MODES)}, not {verify!r}")
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    types = _task_types(task_types)
    per_split = split_scenes(seed, scenes, test_scenes, test_n > 0)
    wanted = {"train": n, "test": test_n}
    for split, split_scene_list in per_split.items():
        _check_feasible(split, types, split_scene_list)
    out = Path(out).expanduser().resolve()
    _prepare_out(out)
    start = time.perf_counter()
    jobs = [SlotJob(str(out), split, i, types[i % len(types)], tuple(per_split[split]), seed, verify)
            for split in per_split for i in range(wanted[split])]
    results = _run_jobs(jobs, workers, show_progress)
    summary: dict = {"generator": "duomem.envs.generate", "seed": seed, "verify": verify, "task_types": types,
                     "splits": {}, "rejected": 0, "rejections": {}, "rejection_examples": {}}
    all_reasons: Counter[str] = Counter()
    failed: list[str] = []
    (out / "index").mkdir(parents=True, exist_ok=True)
    for split in per_split:
        rows: list[TaskSpec] = []
        reasons: Counter[str] = Counter()
        by_type: dict[str, Counter[str]] = {t: Counter() for t in types}
        for job, res in zip(jobs, results, strict=True):
            if job.split != split:
                continue
            for reason, detail in res.rejections:
                reasons[reason] += 1
                by_type[job.task_type][reason] += 1
                summary["rejection_examples"].setdefault(reason, detail)
            if res.row is None:
                failed.append(f"{split} #{job.index} ({job.task_type})")
            else:
                rows.append(TaskSpec.model_validate_json(res.row))
        write_index(out / "index" / f"{split}.jsonl", rows)
        per_type = Counter(r.task_type for r in rows)
        summary["splits"][split] = {
            "requested": wanted[split], "generated": len(rows),
            "per_type": {t: per_type.get(t, 0) for t in types},
            "rejected": sum(reasons.values()), "rejections": dict(sorted(reasons.items())),
            "rejections_per_type": {t: dict(sorted(c.items())) for t, c in by_type.items() if c},
            "scenes": per_split[split],
        }
        all_reasons.update(reasons)
    _remove_empty_dirs(out / "json_2.1.1")
    summary["rejected"] = sum(all_reasons.values())
    summary["rejections"] = dict(sorted(all_reasons.items()))
    summary["rejection_examples"] = dict(sorted(summary["rejection_examples"].items()))
    atomic_write_text(out / "generation.json", _compact_json(summary))
    if failed:
        raise DataError(f"{len(failed)} task(s) failed {MAX_ATTEMPTS} samples each (first: {failed[0]}; reasons: "
                        f"{dict(all_reasons)}); see {out / 'generation.json'}, or try --verify load")
    return {**summary, "seconds": round(time.perf_counter() - start, 1)}


def _run_jobs(jobs: list[SlotJob], workers: int, show_progress: bool) -> list[SlotResult]:
    results: list[SlotResult | None] = [None] * len(jobs)
    with _progress(show_progress, len(jobs)) as advance:
        if workers == 1 or len(jobs) == 1:
            for i, job in enumerate(jobs):
                results[i] = make_slot(job)
                advance()
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
                for i, res in enumerate(pool.map(make_slot, jobs)):
                    results[i] = res
                    advance()
    return [r for r in results if r is not None]


class _progress:
    """A rich progress bar on stderr (or nothing), used as ``with _progress(show, total) as advance``."""

    def __init__(self, show: bool, total: int) -> None:
        self.show, self.total = show, total
        self._bar = None

    def __enter__(self) -> Callable[[], None]:
        if not self.show:
            return lambda: None
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._bar.start()
        task = self._bar.add_task("generating tasks", total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


def _remove_empty_dirs(root: Path) -> None:
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*"), key=lambda p: (len(p.parts), p), reverse=True):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()
