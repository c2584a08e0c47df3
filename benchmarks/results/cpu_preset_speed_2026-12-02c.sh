#!/bin/bash
# issue 17, remaining CPU targets (branch perf19): old against new in one run, alternating
# (benchmarks/old_new.py), and the RNN with the authors' full window grid against the authors' code
# (benchmarks/vs_reference.py). Old checkout: git archive a858017 | tar -x -C /tmp/p19/old_main
cd "$(dirname "$0")/../.."  # the checkout (new side)
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH="$PWD"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
AUTHORS=${AUTHORS:-/work/shared/reference/authors-code}
OLD=${OLD:-/tmp/p19/old_main}
run() { echo "\$ python $*"; nice -n 5 $PY "$@" 2>&1 | grep -v '^USDT'; echo; }
echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "# machine: 2 cores, shared with the lead's long training runs (1 thread each); nice -n 5"
echo "# new = branch perf19 at $(git rev-parse --short HEAD); old = a858017 -> $OLD"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
run benchmarks/old_new.py "$OLD" --configs cpu,cpu_dsem,cpu_now --variants rnn --threads 1 --rounds 16 --iters 2
run benchmarks/vs_reference.py "$AUTHORS" --variants rnn --modes grid --rounds 5 --threads 1
echo "# per phase, new (this branch):"
run benchmarks/train_step.py --phases cpu --threads 1 --iters 8
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
