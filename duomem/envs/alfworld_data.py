"""ALFWorld task sets: unpack, build playable game files, verify them and index them by split.

Sources, in order of precedence: an explicit ``source`` folder, ``$DUOMEM_ALFWORLD_ARCHIVE`` (slim archives
``slim_<split>.tar.xz``), ``$ALFWORLD_DATA`` (the official ``json_2.1.1`` layout). Games are built exactly as
ALFWorld does (domain + grammar shipped in the ``alfworld`` package, the grammar specialised to the trial with
Python's ``random`` seeded by the trial id), so the same data gives byte-identical game files on every machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

from duomem import settings
from duomem.envs.base import TaskSpec
from duomem.errors import DataError

SPLITS: tuple[str, ...] = ("train", "valid_seen", "valid_unseen")
EXPECTED_COUNTS: dict[str, int] = {"train": 3553, "valid_seen": 140, "valid_unseen": 134}
TASK_TYPE_SHORT: dict[str, str] = {
    "pick_and_place_simple": "pick",
    "pick_clean_then_place_in_recep": "clean",
    "pick_heat_then_place_in_recep": "heat",
    "pick_cool_then_place_in_recep": "cool",
    "look_at_obj_in_light": "examine",
    "pick_two_obj_and_place": "pick_two",
}
GAME_FILE = "game.tw-pddl"
TRAJ_FILE = "traj_data.json"
PROBLEM_FILE = "initial_state.pddl"


def alfworld_root(data_root: Path | None = None) -> Path:
    """Folder that holds ``json_2.1.1`` and ``index/`` once prepared."""
    return (data_root or settings.data_root()) / "alfworld"


@dataclass
class PrepareReport:
    """What ``prepare`` did, per split."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    per_type: dict[str, dict[str, int]] = field(default_factory=dict)
    built: int = 0
    verified: int = 0


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"broken task file {path}: {exc}; re-extract the data or delete the folder") from exc


def build_game_file(trial_dir: Path) -> Path:
    """Write ``game.tw-pddl`` for one trial folder (deterministic: ``random`` is seeded with the trial id)."""
    from alfworld.agents.utils.misc import add_task_to_grammar

    domain, grammar = _pddl_domain_and_grammar()
    traj = _read_json(trial_dir / TRAJ_FILE)
    problem_path = trial_dir / PROBLEM_FILE
    if not problem_path.is_file():
        raise DataError(f"{problem_path} is missing; the task set is incomplete")
    state = random.getstate()
    try:
        random.seed(traj["task_id"])
        specialised = add_task_to_grammar(grammar, traj)
    finally:
        random.setstate(state)
    game = {"pddl_domain": domain, "grammar": specialised, "pddl_problem": problem_path.read_text(), "solvable": True}
    out = trial_dir / GAME_FILE
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(game))
    os.replace(tmp, out)
    return out


_DOMAIN_CACHE: tuple[str, str] | None = None


def _pddl_domain_and_grammar() -> tuple[str, str]:
    global _DOMAIN_CACHE
    if _DOMAIN_CACHE is None:
        settings.ensure_alfworld_cache_env()
        import alfworld.info as info

        _DOMAIN_CACHE = (Path(info.ALFRED_PDDL_PATH).read_text(), Path(info.ALFRED_TWL2_PATH).read_text())
    return _DOMAIN_CACHE


def goal_of(game_file: Path) -> str:
    """The task sentence a game states, read from its grammar."""
    match = re.search(r"Your task is to: (.*?)\.\"", _read_json(game_file)["grammar"])
    if not match:
        raise DataError(f"{game_file} states no task ('Your task is to: ...' missing); rebuild it")
    return match.group(1)


def task_params(traj: dict) -> dict[str, str]:
    """The task's arguments from ``traj_data.json``'s ``pddl_params``, lower-case."""
    p = traj.get("pddl_params", {})
    return {
        "object": str(p.get("object_target", "")).lower(),
        "receptacle": str(p.get("parent_target", "")).lower(),
        "toggle": str(p.get("toggle_target", "")).lower(),
        "mrecep": str(p.get("mrecep_target", "")).lower(),
        "sliced": "true" if p.get("object_sliced") else "false",
    }


def _find_source(source: Path | None) -> tuple[str, Path]:
    candidates: list[Path] = [source] if source else []
    if not source:
        for env_path in (settings.alfworld_archive_dir(), settings.official_alfworld_dir()):
            if env_path:
                candidates.append(env_path)
    for path in candidates:
        path = Path(path).expanduser()
        if not path.exists():
            raise DataError(f"data source {path} does not exist; pass --source with a folder of slim_<split>.tar.xz "
                            "archives or an ALFWORLD_DATA folder that holds json_2.1.1")
        if any(path.glob("slim_*.tar.xz")):
            return "archives", path
        if (path / "json_2.1.1").is_dir():
            return "official", path
        if path.name == "json_2.1.1":
            return "official", path.parent
        raise DataError(f"{path} holds neither slim_<split>.tar.xz archives nor a json_2.1.1 folder")
    raise DataError("no ALFWorld data found: pass --source DIR (slim archives or an ALFWORLD_DATA folder), set "
                    "DUOMEM_ALFWORLD_ARCHIVE or ALFWORLD_DATA, or make games with `duomem data generate`")


def _check_archive(archive: Path) -> None:
    sums = archive.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    expected = {line.split()[1]: line.split()[0] for line in sums.read_text().splitlines() if line.strip()}
    if archive.name not in expected:
        return
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != expected[archive.name]:
        raise DataError(f"{archive} does not match SHA256SUMS (corrupt or partial copy); copy it again")


def _extract(archive: Path, dest: Path) -> None:
    _check_archive(archive)
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"cannot extract {archive}: {exc}; copy the archive again") from exc


def iter_trials(split_dir: Path) -> Iterable[Path]:
    """Trial folders of a split, in sorted order, applying ALFWorld's own loader rules."""
    for traj in sorted(split_dir.glob(f"*/*/{TRAJ_FILE}")):
        trial = traj.parent
        if "movable" in str(trial) or "Sliced" in str(trial):
            continue
        yield trial


def _verify_one(game_file: str) -> str | None:
    """Load and reset one game; return an error string or None."""
    try:
        from duomem.envs.alfworld import AlfworldEnv

        env = AlfworldEnv(expert=False)
        try:
            spec = TaskSpec(game_id="verify", split="verify", task_type="pick", game_file=game_file)
            obs = env.reset(spec)
            if not obs.admissible_commands:
                return "no admissible commands after reset"
        finally:
            env.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()


PrepareVerify = Literal["all", "sample", "none"]
"""``all``: load every game once (cached by file digest); ``sample``: two games per task type; ``none``."""


def prepare(
    source: Path | None = None,
    data_root: Path | None = None,
    splits: Iterable[str] = SPLITS,
    verify: PrepareVerify = "all",
    workers: int = 2,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> PrepareReport:
    """Unpack (if needed), build missing game files, verify that games load, and write ``index/<split>.jsonl``.

    ``verify`` is ``all`` (load every game once; results are cached by file digest), ``sample`` (two games per
    task type and split) or ``none``.
    """
    splits = list(splits)
    for split in splits:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    if verify not in get_args(PrepareVerify):
        raise DataError(f"--verify must be all, sample or none, not {verify!r}")
    kind, src = _find_source(source)
    root = alfworld_root(data_root)
    if kind == "archives":
        json_root = root / "json_2.1.1"
        for split in splits:
            if not (json_root / split).is_dir() or not any((json_root / split).iterdir()):
                archive = src / f"slim_{split}.tar.xz"
                if not archive.is_file():
                    raise DataError(f"{archive} is missing; the archive folder must hold slim_{split}.tar.xz")
                _extract(archive, root)
    else:
        json_root = src / "json_2.1.1"
    report = PrepareReport(root=root)
    verified_path = root / "verified.json"
    verified: dict[str, str] = json.loads(verified_path.read_text()) if verified_path.is_file() else {}
    (root / "index").mkdir(parents=True, exist_ok=True)
    for split in splits:
        split_dir = json_root / split
        if not split_dir.is_dir():
            raise DataError(f"{split_dir} is missing: the data source has no {split} split")
        rows: list[TaskSpec] = []
        trials = list(iter_trials(split_dir))
        for i, trial in enumerate(trials):
            game_file = trial / GAME_FILE
            if not game_file.is_file():
                if not os.access(trial, os.W_OK):
                    raise DataError(f"{trial} has no {GAME_FILE} and is read-only; copy the data somewhere writable")
                build_game_file(trial)
                report.built += 1
            game = _read_json(game_file)
            if "solvable" not in game or not game["solvable"]:
                continue
            traj = _read_json(trial / TRAJ_FILE)
            task_type = TASK_TYPE_SHORT.get(traj.get("task_type", ""))
            if task_type is None:
                raise DataError(f"{trial / TRAJ_FILE}: unknown task_type {traj.get('task_type')!r}")
            rel = trial.relative_to(split_dir)
            rows.append(TaskSpec(game_id=f"{split}/{rel.as_posix()}", split=split, task_type=task_type,
                                 game_file=str(game_file.resolve()), goal=goal_of(game_file),
                                 params=task_params(traj)))
            if on_progress:
                on_progress(f"index {split}", i + 1, len(trials))
        to_check = _select_for_verification(rows, verify)
        pending = [r for r in to_check if verified.get(r.game_id) != _file_digest(Path(r.game_file))]
        failures = _verify_many([r.game_file for r in pending], workers, on_progress, split)
        if failures:
            first_file, first_err = next(iter(failures.items()))
            raise DataError(f"{len(failures)} game(s) of {split} failed to load (first: {first_file}: {first_err}); "
                            "delete their game.tw-pddl and rerun prepare, or re-extract the data")
        for r in pending:
            verified[r.game_id] = _file_digest(Path(r.game_file))
        report.verified += len(pending)
        write_index(root / "index" / f"{split}.jsonl", rows)
        report.counts[split] = len(rows)
        report.per_type[split] = dict(Counter(r.task_type for r in rows))
        if kind == "archives" and len(rows) != EXPECTED_COUNTS[split]:
            raise DataError(f"{split} has {len(rows)} games, expected {EXPECTED_COUNTS[split]}; the archive is "
                            "incomplete: copy it again")
    tmp = verified_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(verified))
    os.replace(tmp, verified_path)
    return report


def _select_for_verification(rows: list[TaskSpec], verify: str) -> list[TaskSpec]:
    if verify == "none":
        return []
    if verify == "all":
        return rows
    seen: Counter[str] = Counter()
    picked = []
    for row in rows:
        if seen[row.task_type] < 2:
            picked.append(row)
            seen[row.task_type] += 1
    return picked


def _verify_many(files: list[str], workers: int, on_progress: Callable[[str, int, int], None] | None,
                 split: str) -> dict[str, str]:
    failures: dict[str, str] = {}
    if not files:
        return failures
    if workers <= 1:
        results = map(_verify_one, files)
        for i, (f, err) in enumerate(zip(files, results, strict=True)):
            if err:
                failures[f] = err
            if on_progress:
                on_progress(f"verify {split}", i + 1, len(files))
        return failures
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for i, (f, err) in enumerate(zip(files, pool.map(_verify_one, files, chunksize=4), strict=True)):
            if err:
                failures[f] = err
            if on_progress:
                on_progress(f"verify {split}", i + 1, len(files))
    return failures


def write_index(path: Path, rows: list[TaskSpec]) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as fh:
        for row in rows:
            fh.write(row.model_dump_json() + "\n")
    os.replace(tmp, path)


def load_tasks(split: str, task_root: Path | None = None) -> list[TaskSpec]:
    """The games of ``split`` in index order, from a prepared or generated task set (default: the prepared
    ALFWorld sets), or a ScienceWorld one (``duomem data prepare --env scienceworld``: its games are task names
    the simulator loads, not files)."""
    root = Path(task_root) if task_root else alfworld_root()
    path = root / "index" / f"{split}.jsonl"
    if not path.is_file():
        available = sorted(p.stem for p in (root / "index").glob("*.jsonl"))
        prepare = "duomem data prepare" + (" --env scienceworld" if root.name == "scienceworld" else "")
        hint = f"available: {', '.join(available)}" if available else f"run `{prepare}` first"
        raise DataError(f"split {split!r} is not prepared in {root} ({hint})")
    rows = [TaskSpec.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]
    missing = [r.game_file for r in rows if r.source != "scienceworld" and not Path(r.game_file).is_file()]
    if missing:
        raise DataError(f"{len(missing)} game file(s) of {split} are gone (first: {missing[0]}); "
                        "rerun `duomem data prepare`")
    return rows
