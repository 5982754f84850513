#!/usr/bin/env bash
# A plain (non-editable) install of this checkout, outside it, lists the shipped students and plays one.
# Usage: bash scripts/check_install.sh   (in the environment that has duomem's dependencies; about a minute)
set -euo pipefail
cd "$(dirname "$0")/.."
site=$(mktemp -d); work=$(mktemp -d)
trap 'rm -rf "$site" "$work"' EXIT
python -m pip install -q --no-deps --target "$site" .
cd "$work"
export PYTHONPATH="$site"
python -c "import duomem, sys; sys.exit(0 if duomem.__file__.startswith('$site') else 'duomem was not imported from the install')"
python -m duomem.cli models list > /dev/null
python -c "
import sys
from duomem.eval.students import get_student, shipped_students
names = sorted(shipped_students())
missing = {'smollm2-135m-lora', 'smollm2-135m-duomem'} - set(names)
sys.exit(f'error: the installed package lacks the shipped students {sorted(missing)}' if missing else None)
for n in names:
    get_student(n)  # its files match its manifest
print('shipped students in the installed package:', ', '.join(names))
"
python -m duomem.cli data generate --out gen --n 1 --seed 3 --task-types pick --workers 1 > /dev/null
python -m duomem.cli eval --student smollm2-135m-lora --tasks gen --split train --max-steps 3 --out play --no-progress
test -s play/episodes.jsonl || { echo "error: the installed package played no episode"; exit 1; }
echo "the installed package lists and plays its shipped students"
