"""The natural-motion search on the dev set's train persons (issue "Natural head motion...").

Writes the train persons of the large dev set (split by person exactly as the Trainer splits,
``SPLIT_SEED``) to ``$SUHMO_HOME/natural/train_persons.npz``, a copy of
``search_spaces/natural.yaml`` whose ``data.path`` points at it, and runs ``suhmo-search run``
on that copy. The trials split the train persons again for their validation, so the dev set's
held-out persons play no part in the choice; ``experiments/targets.py`` scores the winner on them.

Commands:
  python experiments/natural_search.py [--name natural] [--num-samples 24] [--time-budget 3h]
  python experiments/natural_search.py --space natural3 --name natural3   # around the cpu preset
  suhmo-search resume natural          # after an interruption
  suhmo-search status natural
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_tables import train_only_file  # noqa: E402

from suhmo.config import make_config  # noqa: E402
from suhmo.paths import dev_data  # noqa: E402
from suhmo.paths import home as suhmo_home  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(dev_data().with_name("real_dev_landmarks_large.npz")))
    p.add_argument("--name", default="natural")
    p.add_argument("--space", default="natural", help="a space under search_spaces/ (its data.path is replaced)")
    p.add_argument("--num-samples", type=int, default=None)
    p.add_argument("--time-budget", default=None)
    a = p.parse_args(argv)
    if not Path(a.data).is_file():
        print(f"skipped: {a.data} not found (set SUHMO_DEV_DATA)", file=sys.stderr)
        return 2
    work = suhmo_home() / "natural"
    work.mkdir(parents=True, exist_ok=True)
    train_file = train_only_file(make_config("small", overrides={"data.path": a.data}), work)
    space = yaml.safe_load((REPO / "search_spaces" / f"{a.space}.yaml").read_text())
    space["base"]["data.path"] = str(train_file)
    resolved = work / f"{a.space}.yaml"
    resolved.write_text(yaml.safe_dump(space, sort_keys=False))
    cmd = [str(Path(sys.executable).with_name("suhmo-search")), "run", "--space", str(resolved),
           "--experiment", a.name]
    if a.num_samples:
        cmd += ["--num-samples", str(a.num_samples)]
    if a.time_budget:
        cmd += ["--time-budget", a.time_budget]
    print("$ " + " ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
