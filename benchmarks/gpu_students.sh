#!/usr/bin/env bash
# The student-size benchmark on the lent GPU machine (benchmarks/students.py; benchmarks/README section 14).
# Work runs in the background (setsid: it outlives the call) while short calls move the model and watch:
#   setup STUDENT ROW...  call once per folder `students.py stage` wrote (.carry/STUDENT/s0 ... sN, .carry/e0, e1),
#                         with `carry: [".carry/STUDENT/sK"]`: each is stashed in /root/stage (the student's parts in
#                         /root/stage/STUDENT); once all are there the model is joined and checked, and the wheels,
#                         the packages without wheels, duomem, the SFT sets of ROW..., the ALFWorld archives and the
#                         query-embedding cache are installed. A second student set up later needs only its s folders
#   train STUDENT ROW...  train the rows' LoRAs one after another (PARALLEL=N: N side by side; a 135M training
#                         peaked at 55 GB once, so two can run out of an 80 GB card's memory), the rest queued;
#                         logs in /root/logs; EPOCHS=N: not the student's own
#   eval STUDENT ROWS     play the rows (comma-separated; all of valid_unseen in one batch each, transformers,
#                         bf16) side by side; records in /root/evals/<student>-valid_unseen/<row>-free-transformers
#   eval-new-types TYPES [ROWS]  benchmarks/new_task_types.py's rows (all, or ROWS, comma-separated) of the
#                         held-out TYPES (comma-separated) side by side, transformers; records in
#                         /root/evals/new-task-types/<type>/<row>-transformers
#   watch SECONDS [ROW...]  wait (at most SECONDS, less once nothing runs), then report progress and put in $OUT
#                         the finished adapters (of ROW... only, when named: a call brings back 8 files, two
#                         135M adapters) in checked parts of 9 MB (files back from a call are at most 16 MiB;
#                         join here with `python scripts/parts.py join $OUT --out runs/students/STUDENT/lora/ROW/
#                         adapter.gguf` per row) and results.tgz (every record folder, <row>.training.json)
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
S=/root/stage L=/root/logs E=/root/evals
mkdir -p $S $L $E
verb=$1; shift
running() { pgrep -f "(students|new_task_types).py (train|eval)" > /dev/null; }
# Background work runs from a snapshot of the tree (one per call, /root/repo.N): each call re-syncs this working
# copy, and a process that starts while a sync rewrites the package (a row's game processes, say) can fail to import.
R=/root/repo.$$
snapshot() {
  mkdir $R && git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t $R 2> /dev/null
  [ -f $R/benchmarks/students.py ] || exit 1  # files deleted in the working copy (a resumed row's packed records)
  ln -s "$PWD/runs" $R/runs
}
background() { (cd $R/benchmarks && PYTHONPATH=$R setsid nohup "$@" < /dev/null &); }
case $verb in
setup)
  student=$1; shift
  P=$S/$student; mkdir -p $P
  for d in .carry/$student/s*; do [ -d "$d" ] && cp -r "$d"/. $P/; done
  for d in .carry/e*; do [ -d "$d" ] && cp -r "$d"/. $S/; done
  [ -f $P/*.parts.json ] && [ -d $P/wheels ] && [ -d $S/wheels ] && [ -d $S/embeddings ] && [ -d $S/site ] \
    || { ls $S $P; exit 0; }  # stashed
  t0=$(date +%s)
  python scripts/parts.py join $P --out $P/model.gguf || exit 1
  python -m pip install -q --no-index --no-deps $S/wheels/*.whl $P/wheels/*.whl || exit 1
  cp -r $S/site/. "$(python -c 'import site; print(site.getsitepackages()[0])')"/ || exit 1
  python -m pip install -q --no-deps --no-build-isolation -e . || exit 1
  home=$(python -c "from duomem import settings; print(settings.duomem_home())")
  mkdir -p $home/models $home/cache/embeddings && cp $S/embeddings/* $home/cache/embeddings/
  sha=$(python -c "from duomem.llm.registry import PACKAGED; print(PACKAGED['$student'].sha256)")
  mv $P/model.gguf $home/models/$student.gguf && printf %s "$sha" > $home/models/$student.sha256
  for row in "$@"; do
    d=runs/students/$student/sft/$row; mkdir -p $d
    gunzip -c $P/$row.jsonl.gz > $d/train.jsonl && cp $P/$row.dataset.json $d/dataset.json
  done
  [ -d $S/banks ] && mkdir -p runs/new-task-types && cp -r $S/banks runs/new-task-types/  # new_task_types.py's
  duomem data prepare --source $S --splits valid_seen,valid_unseen --verify none || exit 1
  echo "set-up $(( $(date +%s) - t0 )) s"; nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv ;;
train)
  student=$1; shift
  snapshot
  printf '%s\n' "$@" > $L/queue
  background bash -c "xargs -P ${PARALLEL:-1} -I{} sh -c 'python students.py train --student $student --rows {} \
    --device cuda ${EPOCHS:+--epochs $EPOCHS} > $L/train-{}.log 2>&1' < $L/queue" ;;
eval)
  student=$1 rows=$2
  n=$(python -c "from duomem.envs.alfworld_data import load_tasks; print(len(load_tasks('valid_unseen')))")
  snapshot
  for row in ${rows//,/ }; do
    background python students.py eval --student $student --rows $row --backend transformers --device cuda \
      --batch $n --runs $E > $L/eval-$row.log 2>&1
  done ;;
eval-new-types)  # benchmarks/new_task_types.py's rows a-c for TYPES (comma-separated), side by side
  snapshot
  background python new_task_types.py eval --types $1 ${2:+--rows $2} --backend transformers --runs $E/new-task-types \
    > $L/eval-new-types.log 2>&1 ;;
watch)
  end=$(( $(date +%s) + $1 )); shift
  while running && [ $(date +%s) -lt $end ]; do sleep 5; done
  nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader
  for f in $L/*.log; do echo "== $f"; tr '\r' '\n' < $f | grep -a -v "^\s*$" | tail -2; done
  for d in $E/*/*/ $E/new-task-types/*/*/; do echo "$d $(cat $d/episodes.jsonl 2>/dev/null | wc -l) episodes"; done
  for o in runs/students/*/lora/*/; do
    row=$(basename $o)
    [ -f $o/adapter.gguf ] || continue
    [ $# -eq 0 ] || [[ " $* " == *" $row "* ]] || continue
    cp $o/training.json $E/$row.training.json
    cp $o/adapter.gguf /tmp/$row.adapter.gguf && python scripts/parts.py split /tmp/$row.adapter.gguf --out $OUT \
      --size 9M > /dev/null
  done
  (cd $E && tar czf $OUT/results.tgz .) ;;
esac
