#!/usr/bin/env bash
# On the GPU machine (benchmarks/students.py): STUDENT ROW... Call once per .carry/sN folder that
# `students.py stage` wrote, in order, with `carry: [".carry/sN"]`; each call stashes its folder in /root/stage,
# and the call carrying the folder with the wheels joins the model, installs and trains the rows side by side.
# Each row's adapter.gguf and training.json come back in $OUT as <row>.adapter.gguf and <row>.training.json.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
student=$1; shift
S=/root/stage; mkdir -p $S
for d in .carry/s*; do [ -d "$d" ] && cp -r "$d"/. $S/; done
[ -d $S/wheels ] || { ls $S; exit 0; }  # a part only: stashed
t0=$(date +%s)
python scripts/parts.py join $S --out $S/model.gguf || exit 1
python -m pip install -q --no-index --no-deps $S/wheels/*.whl || exit 1
python -m pip install -q --no-deps --no-build-isolation -e . || exit 1
home=$(python -c "from duomem import settings; print(settings.duomem_home())")/models; mkdir -p $home
sha=$(python -c "from duomem.llm.registry import PACKAGED; print(PACKAGED['$student'].sha256)")
mv $S/model.gguf $home/$student.gguf && printf %s "$sha" > $home/$student.sha256
for row in "$@"; do
  d=runs/students/$student/sft/$row; mkdir -p $d
  gunzip -c $S/$row.jsonl.gz > $d/train.jsonl && cp $S/$row.dataset.json $d/dataset.json
done
echo "set-up $(( $(date +%s) - t0 )) s"; nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv
( while sleep 20; do nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader; done ) > $OUT/gpu.log &
pids=()
for row in "$@"; do
  (cd benchmarks && python students.py train --student $student --rows $row --device cuda ${STOP:+--stop-after $STOP}) \
    > $OUT/train-$row.log 2>&1 &
  pids+=($!)
done
wait "${pids[@]}"
for row in "$@"; do
  o=runs/students/$student/lora/$row
  grep -a -v "it/s\]\|s/it\]" $OUT/train-$row.log | tail -3
  for f in adapter.gguf training.json; do [ -f $o/$f ] && cp $o/$f $OUT/$row.$f; done
done
echo "total $(( $(date +%s) - t0 )) s"; ls -la $OUT
