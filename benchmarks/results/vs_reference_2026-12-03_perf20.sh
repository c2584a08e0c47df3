#!/bin/bash
# issue 17, RNN with the paper's sampled windows against the authors' code (target 5x), branch perf20:
# old against new in one run, alternating (benchmarks/old_new.py), then the side-by-side against the
# authors' code (benchmarks/vs_reference.py) for this branch and for main, one after the other.
# Old checkout: git archive 93ed1ec | tar -x -C /tmp/p20/old
cd "$(dirname "$0")/../.."  # the checkout (new side)
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"  # absolute: the old side runs from its own checkout
AUTHORS=${AUTHORS:-/work/shared/reference/authors-code}
OLD=${OLD:-/tmp/p20/old}
run() { echo "\$ python $*"; $PY "$@" 2>&1 | grep -v '^USDT'; echo; }
echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "# machine: 2 cores (AMD EPYC, Zen 4), shared with other training runs (1 thread each)"
echo "# new = branch perf20 at $(git rev-parse --short HEAD); old = main at 93ed1ec -> $OLD"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
PYTHONPATH="$PWD" run benchmarks/old_new.py "$OLD" --configs sampled_small,grid_small --variants rnn --threads 1 --rounds 10 --iters 2
echo "# new (this branch):"
PYTHONPATH="$PWD" run benchmarks/vs_reference.py "$AUTHORS" --variants rnn --modes sampled,grid --rounds 5 --threads 1
echo "# old (main at 93ed1ec), right after:"
(cd "$OLD" && PYTHONPATH="$OLD" run benchmarks/vs_reference.py "$AUTHORS" --variants rnn --modes sampled,grid --rounds 5 --threads 1)
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
