"""Model selection over a search and a self-contained export of the winning checkpoint.

Selection works on *checkpoints*, not runs: every trial keeps (as MLflow artifacts under
``checkpoints/step_<k>/``) the checkpoint of each step that improved one of the search's
objectives, and the metrics of every evaluation step. A candidate is one such (run, step);
its score is the metric AT that step. For an objective metric the winner is therefore the
checkpoint holding the highest ``best_<metric>`` over the trials (not the last value).

Options: ``pareto`` first keeps the candidates not dominated on the search's objectives
(all objectives evaluated at the same checkpoint); ``mean_over_seeds`` ranks configurations
(trials whose params differ only in the seed) by the mean over seeds of each trial's best
score, then takes the best checkpoint of the best configuration.

The export folder::

    generator.pt     generator state dict          config.yaml   the full resolved config
    generator.ts     TorchScript: forward(obs [B,O,68,2], init_vel [B,68,2], n_future:int)
                     -> [B, n_future, 68, 2]; needs torch only, no suhmo code
    metrics.json     the metrics at that checkpoint
    provenance.json  run id, parent (search) run id, experiment, step, selection rule
    sample.gif, sample.png, README.md (model card), reference.npy (the sample's reference pose)
    sampling.json    how the MLflow model samples (tracking.mlflow_model.sampling_settings)

The winner is also logged as an MLflow 3 model (tracking.mlflow_model): a pyfunc LoggedModel
linked to its trial run, loadable and servable with torch and numpy only.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from mlflow.exceptions import MlflowException

from suhmo.selection import Criterion, mode_of, pareto_front, rank
from suhmo.utils import SuhmoError, atomic_write_bytes, atomic_write_stream, atomic_write_text

from tracking.store import (CKPT_DIR, EVAL_DIR, child_runs, default_tracking_uri, mlflow_client, resolve_search,
                            search_objectives)
from tracking.results import repeat_groups

_SEED_PARAMS = {"seed", "train.seed"}


@dataclass
class Candidate:
    run_id: str
    run_name: str
    trial_id: str | None
    step: int
    value: float  # the selection metric at this step
    objectives: dict[str, float] = field(default_factory=dict)  # objective values at this step


@dataclass
class Selection:
    tracking_uri: str
    experiment_id: str
    experiment_name: str
    parent_run_id: str
    parent_run_name: str
    metric: str
    mode: str
    objectives: list[tuple[str, str]]
    best: Candidate
    considered: int  # candidate checkpoints examined
    pareto: list[Candidate] | None = None
    group_mean: float | None = None  # mean over seeds of the chosen configuration
    group_runs: list[str] | None = None

    def describe(self) -> str:
        b = self.best
        extra = f", Pareto set of {len(self.pareto)}" if self.pareto is not None else ""
        if self.group_mean is not None:
            extra += f", config mean over {len(self.group_runs or [])} seed(s) {self.group_mean:.5g}"
        return (f"{self.metric}={b.value:.5g} ({self.mode}) at step {b.step} of run {b.run_name} "
                f"[{b.run_id}] in search {self.parent_run_name} ({self.considered} checkpoints{extra})")


# ---------------------------------------------------------------------- selection
def _checkpoint_steps(client, run_id: str) -> list[int]:
    steps = []
    for f in client.list_artifacts(run_id, CKPT_DIR):
        name = f.path.rsplit("/", 1)[-1]
        if f.is_dir and name.startswith("step_") and name[5:].isdigit():
            steps.append(int(name[5:]))
    return sorted(steps)


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {int(m.step): float(m.value) for m in client.get_metric_history(run_id, key)}


def select_best(tracking_uri: str | None = None, experiment: str | None = None, *,
                metric: str | None = None, mode: str | None = None, pareto: bool = False,
                mean_over_seeds: bool = False, search_run_id: str | None = None) -> Selection:
    """Pick the best checkpoint of the latest search (of ``experiment``, or of the store)."""
    tracking_uri = tracking_uri or default_tracking_uri()
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///"):]).is_file():
        raise SuhmoError(f"no MLflow database at {tracking_uri[len('sqlite:///'):]}; run a search first "
                         "or pass --tracking-uri")
    if mode is not None and mode not in ("min", "max"):
        raise SuhmoError(f"--mode {mode!r}: choose min or max")
    client = mlflow_client(tracking_uri)
    exp, parent = resolve_search(client, tracking_uri, experiment, search_run_id)
    children = child_runs(client, exp.experiment_id, parent.info.run_id)
    if not children:
        raise SuhmoError(f"search {parent.info.run_name} [{parent.info.run_id}] has no trial runs")
    objectives = search_objectives(parent, children)
    obj = _selection_objective(children, objectives, parent.info.run_name, metric, mode)
    cands = _candidates(client, children, obj.metric, objectives)
    if not cands:
        raise SuhmoError(f"no trial run of search {parent.info.run_name} has a checkpoint with metric "
                         f"{obj.metric!r} (were checkpoints passed to TrialLogger.log_eval?)")
    considered = len(cands)
    front = None
    if pareto:
        if len(objectives) < 1:
            raise SuhmoError("--pareto: the search logged no objectives")
        front = pareto_front(cands, objectives, lambda c: c.objectives)
        if not front:
            raise SuhmoError(f"--pareto: no checkpoint has all objectives {[m for m, _ in objectives]}")
        cands = front
    group_mean = group_runs = None
    if mean_over_seeds:
        cands = _best_configuration(cands, children, obj)
        group_mean, group_runs = float(np.mean([c.value for c in cands])), [c.run_id for c in cands]
    best = rank(cands, obj, lambda c: c.value, tiebreak=lambda c: c.step)[0]
    return Selection(tracking_uri, exp.experiment_id, exp.name, parent.info.run_id, parent.info.run_name,
                     obj.metric, obj.mode, objectives, best, considered, front, group_mean, group_runs)


def _selection_objective(children: list, objectives: list[tuple[str, str]], search: str,
                         metric: str | None, mode: str | None) -> Criterion:
    """The metric to select on (default: the search's first objective) and its direction (the
    search's, else the registry's), checked against what the trials logged."""
    known = sorted({k for c in children for k in c.data.metrics if not k.startswith("best_")})
    if metric is None:
        if not objectives:
            raise SuhmoError("the search logged no objectives; pass --metric (known: " + ", ".join(known) + ")")
        metric = objectives[0][0]
    if metric not in known:
        raise SuhmoError(f"unknown metric {metric!r} in search {search}; "
                         f"known: {', '.join(known) or 'none (no evaluation was logged)'}")
    return Criterion(metric, mode if mode is not None else dict(objectives).get(metric, mode_of(metric)))


def _candidates(client, children: list, metric: str, objectives: list[tuple[str, str]]) -> list[Candidate]:
    """Every checkpoint kept in MLflow with a finite ``metric`` at its step."""
    cands: list[Candidate] = []
    for run in children:
        steps = _checkpoint_steps(client, run.info.run_id)
        if not steps:
            continue
        hist = {k: _history(client, run.info.run_id, k) for k in {metric} | {m for m, _ in objectives}}
        for s in steps:
            v = hist[metric].get(s)
            if v is None or not math.isfinite(v):
                continue
            objs = {m: hist[m][s] for m, _ in objectives if s in hist[m]}
            cands.append(Candidate(run.info.run_id, run.info.run_name, run.data.tags.get("trial_id"), s, v, objs))
    return cands


def _best_configuration(cands: list[Candidate], children: list, obj: Criterion) -> list[Candidate]:
    """The best checkpoint of each run of the configuration whose mean over seeds is best.

    After ``suhmo-search repeat`` the configurations are the repeat groups and only their runs
    count (the search's own trial was selected for its score, so counting it would bias its
    configuration); else the runs whose params differ only in the seed."""
    params = {r.info.run_id: r.data.params for r in children}
    per_run: dict[str, Candidate] = {}
    for c in cands:
        if c.run_id not in per_run or obj.better(c.value, per_run[c.run_id].value):
            per_run[c.run_id] = c
    groups: dict[tuple, list[Candidate]] = {}
    repeat_key = {r.info.run_id: k for k, runs in repeat_groups(children).items() for r in runs}
    for rid, c in per_run.items():
        if repeat_key and rid not in repeat_key:
            continue
        sig = (repeat_key[rid],) if repeat_key else tuple(
            sorted((k, v) for k, v in params[rid].items() if k not in _SEED_PARAMS))
        groups.setdefault(sig, []).append(c)
    if not groups:
        raise SuhmoError(f"--mean-over-seeds: no repeat run has a checkpoint with metric {obj.metric!r}")
    return obj.best_of(groups.values(), lambda g: float(np.mean([c.value for c in g])))


# ---------------------------------------------------------------------- export
def _reference_poses(cfg, k: int, seed: int) -> np.ndarray:
    """``k`` normalised reference poses [k, 68, 2]: first frames of the training data when it
    is readable here, else of procedural talking heads (the export must work anywhere)."""
    from suhmo.generate import as_normalised

    clips = None
    try:
        from suhmo.data import load_dataset

        clips = load_dataset(cfg).clips
    except Exception:  # noqa: BLE001 - data absent on this machine: fall back to synthetic heads
        clips = None
    if not clips:
        from suhmo.data import synthesize

        clips = synthesize(max(k, 1), 1.0, seed).clips
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(clips), size=k, replace=len(clips) < k)
    return np.stack([as_normalised(clips[i], cfg)[0] for i in idx]).astype(np.float32)


def _torchscript(G, out: Path, refs: np.ndarray, seed: int) -> float:
    """Script ``G.export_module()`` to ``out`` and check it against ``G.generate``; returns the
    max abs difference on a test input (pairs of a reference and its ``test_partner``)."""
    import torch

    from suhmo.data import test_partner

    module = G.export_module().eval()
    scripted = torch.jit.script(module)
    atomic_write_stream(out, lambda f: torch.jit.save(scripted, f))
    rng = np.random.default_rng(seed)
    pairs = np.stack([refs, test_partner(refs, rng)], 1).reshape(-1, 68, 2)
    obs = torch.from_numpy(pairs[:, None].copy())
    vel = torch.from_numpy(np.broadcast_to(rng.uniform(-0.01, 0.01, (len(pairs), 1, 2)),
                                           (len(pairs), 68, 2)).astype(np.float32).copy())
    loaded = torch.jit.load(str(out))
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # generators with latent noise (VAE baselines) draw the same noise in both
        ref = G.generate(obs, 8, init_vel=vel).future
        torch.manual_seed(seed)
        got = loaded(obs, vel, 8)
    diff = float((ref - got).abs().max())
    if not diff <= 1e-4:
        raise SuhmoError(f"{out}: TorchScript generator differs from the checkpoint by {diff:.3g}")
    return diff


_KINDS = {"actor": "ACTOR-style Transformer CVAE baseline", "hitdvae": "HiT-DVAE-style dynamical VAE baseline"}
_CARD = """# SUHMo generator `{name}`

{kind} for unconditional head motion (68 facial landmarks, 2-D), exported by
`suhmo best-export` from MLflow.

| | |
|---|---|
| selected by | `{metric}` ({mode}) = **{value:.5g}** at step {step} |
| trial run | `{run_name}` (`{run_id}`) |
| search | `{parent_name}` (`{parent_id}`), experiment `{experiment}` |
| variant | `{variant}` |
| candidates | {considered} checkpoints{extra} |
| exported | {when} |

![sample](sample.gif)

`sample.png`: per sample, first frame | last frame | motion map.

## Metrics at this checkpoint

{metrics_table}

## On what scale

{scale_section}

## Use

With suhmo installed:

```
suhmo generate --model {out_name} --reference {out_name}/reference.npy --frames 100 --out motion.npz
suhmo render motion.npz --out motion.gif
```

`reference.npy` is a [68, 2] reference pose in the model's [0, 1] frame; any pose works.

```python
from suhmo.generate import load_model, sample
G, cfg = load_model("{out_name}")
seqs = sample(G, refs, frames=100, seed=0)   # refs [K, 68, 2] in [0, 1] -> [K, 101, 68, 2]
```

Without suhmo (torch only; game engines and other runtimes via TorchScript):

```python
import torch
G = torch.jit.load("{out_name}/generator.ts")
# obs [B, O, 68, 2] in [0, 1], B even: rows (2n, 2n+1) form a pair (paper Sec. 3.3);
# init_vel [B, 68, 2] initial velocity; returns [B, n_future, 68, 2] positions.
future = G(obs, init_vel, 100)
```

As an MLflow model (torch and numpy only; `models:/NAME@champion` after `--register NAME`,
else the `model_uri` in `provenance.json`):

```python
import mlflow
m = mlflow.pyfunc.load_model("models:/NAME@champion")
motion = m.predict({{"reference": ref}}, params={{"frames": 40, "samples": 2, "seed": 1}})
# ref [K, 68, 2] float32, pixels or [0, 1] -> [K * samples, frames + 1, 68, 2] in [0, 1]
```

`mlflow models serve -m models:/NAME@champion --env-manager local` answers
`POST /invocations` with `{{"inputs": {{"reference": ...}}, "params": {{...}}}}`.

Files: `generator.pt` (state dict), `config.yaml` (full config), `generator.ts`
(TorchScript), `metrics.json`, `provenance.json` (MLflow run, search, step),
`reference.npy` (the reference pose of the sample), `sampling.json`.
"""


def export_best(sel: Selection, out_dir: str | Path, *, register: str | None = None,
                alias: str | None = "champion", sample_frames: int = 50, seed: int = 0) -> dict:
    """Write the self-contained export of ``sel.best`` to ``out_dir``; returns the provenance.

    The steps: the selected checkpoint and the metrics of its step from MLflow, the generator
    files, the TorchScript module and the samples, the model card, the MLflow pyfunc model linked
    to the trial run, then ``provenance.json``. With ``register`` the model becomes a new version
    of registered model ``register`` with alias ``alias``, and the export folder is also logged
    to the trial run (``exports/step_<k>``).
    """
    t0 = time.perf_counter()
    out = Path(out_dir).resolve()
    if out.exists() and not out.is_dir():
        raise SuhmoError(f"--out {out}: exists and is not a folder")
    client = mlflow_client(sel.tracking_uri)
    ck, metrics = _selected_checkpoint(client, sel.best)
    cfg, G = _generator(ck, sel.best)
    out.mkdir(parents=True, exist_ok=True)
    _write_generator(out, ck, cfg, metrics, sel.best.step)
    ts_diff = _write_samples(out, G, cfg, sel.best, sample_frames, seed)
    prov = _provenance(sel, ts_diff)
    scale_section, prov["scale"] = _scale_section(cfg, metrics)
    card = _model_card(sel, out, cfg, metrics, prov["exported_at"], scale_section)
    atomic_write_text(out / "README.md", card)

    from tracking.mlflow_model import log_model

    logged = log_model(sel, out, cfg, card, register=register, alias=alias)
    prov["mlflow_model"] = {k: logged[k] for k in ("model_id", "model_uri", "linked_metrics")}
    if register:
        prov["registry"] = logged["registry"]
    atomic_write_text(out / "provenance.json", json.dumps(prov, indent=2, default=str))
    if register:  # the export folder beside the model, for downloads from the run's artifacts
        client.log_artifacts(sel.best.run_id, str(out), f"exports/step_{sel.best.step}")
    prov["export_s"] = time.perf_counter() - t0
    return prov


def _selected_checkpoint(client, b: Candidate) -> tuple[dict, dict]:
    """The checkpoint MLflow keeps for step ``b.step`` of run ``b.run_id`` and the metrics of
    that step (those of its evaluation record over those saved in the checkpoint)."""
    from suhmo.checkpoint import load_checkpoint

    with tempfile.TemporaryDirectory(prefix="suhmo-export-") as tmp:
        local = Path(client.download_artifacts(b.run_id, f"{CKPT_DIR}/step_{b.step}", tmp))
        files = sorted(p for p in local.rglob("*") if p.is_file())
        if not files:
            raise SuhmoError(f"run {b.run_id}: checkpoint artifact {CKPT_DIR}/step_{b.step} is empty")
        ck = load_checkpoint(next((p for p in files if p.suffix == ".pt"), files[0]))
        try:
            m_local = Path(client.download_artifacts(b.run_id, f"{EVAL_DIR}/step_{b.step}/metrics.json", tmp))
            step_metrics = json.loads(m_local.read_text())["metrics"]
        except (MlflowException, OSError, KeyError, ValueError):
            step_metrics = {}
    if int(ck.get("step", b.step)) != b.step:
        raise SuhmoError(f"run {b.run_id}: checkpoint under step_{b.step} holds step {ck.get('step')}")
    return ck, {**dict(ck.get("metrics") or {}), **step_metrics}


def _generator(ck: dict, b: Candidate):
    """``(cfg, G)``: the checkpoint's config and its generator, in eval mode."""
    from suhmo.checkpoint import generator_state
    from suhmo.config import Config
    from suhmo.models import build_generator

    cfg = Config.from_dict(ck["config"], where=f"checkpoint of run {b.run_id} step {b.step}")
    G = build_generator(cfg)
    G.load_state_dict(generator_state(ck))
    return cfg, G.eval()


def _write_generator(out: Path, ck: dict, cfg, metrics: dict, step: int) -> None:
    """``generator.pt``, ``config.yaml`` and ``metrics.json``."""
    from suhmo.checkpoint import generator_state, write_export

    write_export(out, generator_state(ck), cfg)
    atomic_write_text(out / "metrics.json", json.dumps({"step": step, "metrics": metrics}, indent=2))


def _write_samples(out: Path, G, cfg, b: Candidate, frames: int, seed: int) -> float:
    """``reference.npy``, ``generator.ts`` (checked against ``G``: returns the max abs
    difference) and the samples ``sample.gif`` / ``sample.png`` from 4 reference poses."""
    import torch

    from suhmo.generate import sample
    from suhmo.render import render_png, render_video

    refs = _reference_poses(cfg, 4, seed)
    buf = io.BytesIO()
    np.save(buf, refs[0])
    atomic_write_bytes(out / "reference.npy", buf.getvalue())
    ts_diff = _torchscript(G, out / "generator.ts", refs[:2], seed)
    with torch.no_grad():
        seqs = sample(G, refs, frames, seed, init_vel=cfg.eval.init_vel)
    if not np.isfinite(seqs).all():
        raise SuhmoError(f"run {b.run_id} step {b.step}: the generator produced non-finite samples")
    render_video(list(seqs), out / "sample.gif", size=160, grid=len(seqs), fps=cfg.data.fps)
    render_png(list(seqs), out / "sample.png", size=160, max_samples=len(seqs))
    return ts_diff


def _provenance(sel: Selection, ts_diff: float) -> dict:
    """Where the export comes from: store, search, trial run, step and the selection rule."""
    b = sel.best
    return {
        "tracking_uri": sel.tracking_uri, "experiment": sel.experiment_name,
        "experiment_id": sel.experiment_id, "run_id": b.run_id, "run_name": b.run_name,
        "trial_id": b.trial_id, "parent_run_id": sel.parent_run_id, "parent_run_name": sel.parent_run_name,
        "step": b.step, "metric": sel.metric, "mode": sel.mode, "value": b.value,
        "objectives": sel.objectives, "objective_values": b.objectives,
        "pareto": sel.pareto is not None, "pareto_size": len(sel.pareto) if sel.pareto is not None else None,
        "mean_over_seeds": sel.group_mean, "seed_runs": sel.group_runs, "candidates": sel.considered,
        "checkpoint_artifact": f"runs:/{b.run_id}/{CKPT_DIR}/step_{b.step}",
        "torchscript_max_abs_diff": ts_diff,
        "exported_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _model_card(sel: Selection, out: Path, cfg, metrics: dict, when: str, scale_section: str) -> str:
    """The export's ``README.md``."""
    b = sel.best
    table = "\n".join(["| metric | value |", "|---|---|"] +
                      [f"| {k} | {v:.5g} |" for k, v in sorted(metrics.items())
                       if isinstance(v, (int, float))]) if metrics else "(none logged)"
    extra = f", Pareto set of {len(sel.pareto)}" if sel.pareto is not None else ""
    if sel.group_mean is not None:
        extra += f"; configuration mean over {len(sel.group_runs or [])} seed(s): {sel.group_mean:.5g}"
    return _CARD.format(name=out.name, metric=sel.metric, mode=sel.mode, value=b.value, step=b.step,
                        run_name=b.run_name, run_id=b.run_id, parent_name=sel.parent_run_name,
                        parent_id=sel.parent_run_id, experiment=sel.experiment_name,
                        variant=cfg.model.variant, kind=_KINDS.get(cfg.model.variant, "Autoregressive GAN"),
                        considered=sel.considered, extra=extra, when=when, metrics_table=table,
                        out_name=out.name, scale_section=scale_section)


def _scale_section(cfg, metrics: dict) -> tuple[str, dict | None]:
    """The model card's distances beside a frozen face and real data (same data and protocol
    as the trial's evaluations; suhmo.metrics.scale), with a plain verdict."""
    from suhmo.metrics import landmark as lm
    from suhmo.metrics.scale import scale_for_config, verdict

    keys = [k for k in lm.FD_KEYS if isinstance(metrics.get(k), (int, float))]
    if not keys:
        return "(no distance logged at this checkpoint)", None
    try:
        scale = scale_for_config(cfg)
    except (SuhmoError, ValueError, OSError) as e:
        return f"(not available: {e})", None
    rows = ["| distance (lower is better) | this model | frozen face | real data |", "|---|---|---|---|"]
    rows += [f"| {k} | {metrics[k]:.4g} | {scale['frozen face'][k]:.4g} | {scale['real data'][k]:.4g} |"
             for k in keys]
    worse = verdict(metrics, scale)
    if not worse:
        says = "**This model is better than a frozen face on every distance.**"
    elif len(worse) == len(keys):
        says = ("**This model is worse than a frozen face on every distance: a face that does not "
                "move at all scores better.**")
    else:
        says = f"**This model is worse than a frozen face on {', '.join(worse)}.**"
    text = ("\n".join(rows) + "\n\n" + says + "\n\n"
            "`frozen face`: every sequence is its reference pose held still, scored exactly like the model "
            "(same held-out persons, reference poses, samples, seed and frames). `real data`: as many "
            "windows of real clips of the training persons, scored against the same held-out statistics. "
            "Persons differ in face shape, so on `fd_frame` real data of other persons may score above a "
            "frozen face; the clip and motion distances are about motion.")
    return text, scale


def selection_dict(sel: Selection) -> dict:
    d = asdict(sel)
    d["best"] = asdict(sel.best)
    return d
