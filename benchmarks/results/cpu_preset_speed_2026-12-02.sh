#!/bin/bash
# issue 17, cpu preset target: old against new in one run, alternating (see benchmarks/old_new.py)
cd "$(dirname "$0")/../.."  # the checkout (new side)
export OMP_WAIT_POLICY=PASSIVE
PY=.venv/bin/python
echo "# date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "# machine: 2 cores, shared with two long training runs of the lead (1 thread each); nice -n 5"
echo "# new = branch perf17b at $(git rev-parse --short HEAD); old = git archive bf940f3 (issue 17's start) -> /tmp/p17/old_bf,"
echo "#       git archive a858017 (main when this work started) -> /tmp/p17/old_main"
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "\$ python benchmarks/old_new.py /tmp/p17/old_bf --configs small64 --variants rnn --threads 1 --rounds 16 --iters 2"
nice -n 5 $PY benchmarks/old_new.py /tmp/p17/old_bf --configs small64 --variants rnn --threads 1 --rounds 16 --iters 2
echo
echo "\$ python benchmarks/old_new.py /tmp/p17/old_main --configs cpu,cpu_dsem --variants rnn --threads 1 --rounds 16 --iters 2"
nice -n 5 $PY benchmarks/old_new.py /tmp/p17/old_main --configs cpu,cpu_dsem --variants rnn --threads 1 --rounds 16 --iters 2
echo
echo "# per phase, new (this branch):"
echo "\$ python benchmarks/train_step.py --phases cpu --threads 1 --iters 8"
nice -n 5 $PY benchmarks/train_step.py --phases cpu --threads 1 --iters 8
echo
echo "# per phase, old (main at a858017; the same tool, run on the old checkout):"
echo "\$ cd /tmp/p17/old_main && PYTHONPATH=. python /work/wt-perf17b/benchmarks/train_step.py --phases cpu --threads 1 --iters 8"
(cd /tmp/p17/old_main && PYTHONPATH=/tmp/p17/old_main nice -n 5 /work/wt-perf17b/$PY /work/wt-perf17b/benchmarks/train_step.py --phases cpu --threads 1 --iters 8)
echo
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
