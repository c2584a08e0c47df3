#!/bin/bash
# issue 17, remaining CPU targets: old against new in one run, alternating (benchmarks/old_new.py), and
# the RNN with the authors' full window grid against the authors' code (benchmarks/vs_reference.py).
# Old checkouts: git archive bf940f3 | tar -x -C /tmp/p18/old_bf; git archive a858017 | tar -x -C /tmp/p18/old_main
cd "$(dirname "$0")/../.."  # the checkout (new side)
export OMP_WAIT_POLICY=PASSIVE PYTHONPATH="$PWD"
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
AUTHORS=${AUTHORS:-/work/shared/reference/authors-code}
run() { echo "\$ python $*"; nice -n 5 $PY "$@" 2>&1 | grep -v '^USDT'; echo; }
echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "# machine: 2 cores, shared with the lead's long training runs (1 thread each); nice -n 5"
echo "# new = branch perf18 at $(git rev-parse --short HEAD); old = bf940f3 -> /tmp/p18/old_bf, a858017 -> /tmp/p18/old_main"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
run benchmarks/old_new.py /tmp/p18/old_bf --configs small64 --variants rnn --threads 1 --rounds 16 --iters 2
run benchmarks/old_new.py /tmp/p18/old_main --configs cpu,cpu_dsem,cpu_now --variants rnn --threads 1 --rounds 16 --iters 2
run benchmarks/vs_reference.py "$AUTHORS" --variants rnn --modes grid --rounds 5 --threads 1
echo "# per phase, new (this branch):"
run benchmarks/train_step.py --phases cpu --threads 1 --iters 8
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
