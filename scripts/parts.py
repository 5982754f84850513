#!/usr/bin/env python3
"""Move a large file (a GGUF or safetensors model) to a machine without network access, in parts.

    python scripts/parts.py split MODEL.gguf --out parts/ --size 48M    # parts/MODEL.gguf.part000 ... + manifest
    python scripts/parts.py join parts/ --out MODEL.gguf                 # checks every part and the whole file

``split`` writes the parts and ``<name>.parts.json`` (the file's size and sha256, each part's size and sha256).
``join`` checks each part against the manifest before it writes anything, joins them through a temporary file
and checks the joined file's sha256 before renaming it into place: a missing, short or damaged part is one line
naming it. Standard library only, so it runs on a bare machine (Python 3.8 or later).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
from pathlib import Path

CHUNK = 1 << 20
MANIFEST = ".parts.json"


def _size(text: str) -> int:
    """``48M`` -> bytes (K, M, G are powers of 1024)."""
    m = re.fullmatch(r"(\d+)([KMG]?)i?B?", text.strip(), re.IGNORECASE)
    if not m or int(m.group(1)) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 48M")
    return int(m.group(1)) * 1024 ** " KMG".index((m.group(2) or " ").upper())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def split(source: Path, out: Path, size: int) -> Path:
    """Write ``source`` as parts of at most ``size`` bytes into ``out``; returns the manifest's path."""
    out.mkdir(parents=True, exist_ok=True)
    whole = hashlib.sha256()
    parts = []
    with source.open("rb") as fh:
        index = 0
        while True:
            name = f"{source.name}.part{index:03d}"
            digest, written = hashlib.sha256(), 0
            with (out / name).open("wb") as part:
                while written < size and (block := fh.read(min(CHUNK, size - written))):
                    part.write(block)
                    digest.update(block)
                    whole.update(block)
                    written += len(block)
            if written == 0:
                (out / name).unlink()
                break
            parts.append({"name": name, "bytes": written, "sha256": digest.hexdigest()})
            index += 1
    manifest = out / (source.name + MANIFEST)
    manifest.write_text(json.dumps({"file": source.name, "bytes": source.stat().st_size,
                                    "sha256": whole.hexdigest(), "parts": parts}, indent=1) + "\n")
    return manifest


def join(folder: Path, out: Path | None = None) -> Path:
    """Check and join the parts described by the one manifest in ``folder`` (or by the manifest ``folder`` names,
    when several files' parts share a folder); returns the joined file's path."""
    if folder.is_file() and folder.name.endswith(MANIFEST):
        manifests, folder = [folder], folder.parent
    else:
        manifests = sorted(folder.glob("*" + MANIFEST))
    if len(manifests) != 1:
        raise SystemExit(f"error: {folder} holds {len(manifests)} manifests (*{MANIFEST}); expected one (or name "
                         "the manifest to join)")
    meta = json.loads(manifests[0].read_text())
    for p in meta["parts"]:
        path = folder / p["name"]
        if not path.is_file():
            raise SystemExit(f"error: part {path} is missing; copy it again")
        if path.stat().st_size != p["bytes"] or _sha256(path) != p["sha256"]:
            raise SystemExit(f"error: part {path} is damaged (size or sha256 differs from the manifest); copy it "
                             "again")
    out = out or folder / meta["file"]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as fh:
        for p in meta["parts"]:
            with (folder / p["name"]).open("rb") as part:
                while block := part.read(CHUNK):
                    fh.write(block)
    if _sha256(tmp) != meta["sha256"]:
        tmp.unlink()
        raise SystemExit(f"error: the joined file's sha256 differs from the manifest's ({meta['sha256'][:12]}...)")
    os.replace(tmp, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("split", help="write FILE as parts with a sha256 manifest")
    s.add_argument("file", type=Path)
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--size", type=_size, default=_size("48M"), help="largest part, e.g. 48M (default)")
    j = sub.add_parser("join", help="check the parts in FOLDER (or those of the manifest named) and join them")
    j.add_argument("folder", type=Path, help="a folder with one manifest, or a manifest")
    j.add_argument("--out", type=Path, help="the joined file (default: its own name inside FOLDER)")
    args = parser.parse_args(argv)
    if args.command == "split":
        if not args.file.is_file():
            raise SystemExit(f"error: {args.file} does not exist")
        print(split(args.file, args.out, args.size))
    else:
        print(join(args.folder, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
