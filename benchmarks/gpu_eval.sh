#!/usr/bin/env bash
# On the GPU machine, after benchmarks/gpu_students.sh set it up (model, wheels, duomem, adapters): STUDENT ROWS
# [SPLIT] plays the rows (comma-separated, side by side) batched on the transformers backend, every game of SPLIT
# (default valid_unseen) in one batch, within $LIMIT seconds (default 540); each row's records come back in $OUT
# (finished episodes are kept by a cut-off row and resumed by the next call). The first call also carries
# .carry/e0 (`students.py stage-eval`): the game wheels, the slim ALFWorld archives and the query-embedding cache
# (so the memory rows need no embedder there).
set -uo pipefail
export PYTHONUNBUFFERED=1
student=$1 rows=$2 split=${3:-valid_unseen}
if [ -d .carry/e0 ]; then
  python -m pip install -q --no-index --no-deps .carry/e0/wheels/*.whl || exit 1
  python -m pip install -q --no-deps --no-build-isolation -e . || exit 1
  home=$(python -c "from duomem import settings; print(settings.duomem_home())")
  mkdir -p $home/cache/embeddings && cp .carry/e0/minilm.jsonl $home/cache/embeddings/
  duomem data prepare --source .carry/e0 --splits valid_seen,valid_unseen --verify none || exit 1
fi
n=$(python -c "from duomem.envs.alfworld_data import load_tasks; print(len(load_tasks('$split')))")
t0=$(date +%s)
( while sleep 15; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done ) > $OUT/gpu.log &
(cd benchmarks && timeout ${LIMIT:-540} python students.py eval --student $student --rows $rows --split $split \
  --backend transformers --device cuda --batch $n) > $OUT/eval.log 2>&1
echo "rc $? after $(( $(date +%s) - t0 )) s"; grep -v "^\s*$" $OUT/eval.log | tail -5
for row in ${rows//,/ }; do
  d=benchmarks/runs/$student-$split/$row-free-transformers
  [ -d $d ] && mkdir -p $OUT/$row && cp $d/* $OUT/$row/ && echo "$row: $(wc -l < $d/episodes.jsonl) episodes"
done
