"""The exported winner as an MLflow 3 model: a LoggedModel of the pyfunc flavor.

The model is ``tracking/motion_pyfunc.py`` logged as code with the export's TorchScript
generator and a small JSON of sampling settings as artifacts; loading and serving it needs
torch and numpy only. It is linked to the trial run it came from (a model output of that run
at the selected step) and to the metrics of that step; with a registered-model name, the new
registry version and its alias point at it (``models:/NAME@ALIAS`` loads and serves).
"""

from __future__ import annotations

import contextlib
import inspect
import json
from pathlib import Path

import numpy as np

from suhmo.utils import SuhmoError, atomic_write_text

from tracking.store import mlflow_client
from tracking.view import NOTE_TAG

MODEL_NAME = "generator"
CODE_FILE = Path(__file__).with_name("motion_pyfunc.py")
DEFAULTS = {"frames": 120, "samples": 4, "seed": 0}  # those of `suhmo generate`


def sampling_settings(cfg) -> dict:
    """What the pyfunc model needs to sample exactly like ``suhmo.generate.sample``."""
    from suhmo.data import FLIP_PERM, test_partner
    from suhmo.data.windows import UPPER
    from suhmo.generate import sample

    tp = inspect.signature(test_partner).parameters
    return {
        "scale_low": tp["scale_low"].default, "scale_high": tp["scale_high"].default,
        "flip_p": tp["flip_p"].default, "upper": UPPER, "flip_perm": [int(i) for i in FLIP_PERM],
        "chunk": inspect.signature(sample).parameters["chunk"].default,
        "init_vel": float(cfg.eval.init_vel), "normalize": cfg.data.normalize,
        "bbox_scale": float(cfg.data.bbox_scale), "defaults": dict(DEFAULTS),
    }


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 68, 2), "reference")]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, 68, 2), "motion")]),
        params=ParamSchema([ParamSpec(k, "long", v) for k, v in DEFAULTS.items()]),
    )


@contextlib.contextmanager
def fluent_uri(uri: str):
    """MLflow's fluent API pointed at ``uri`` for the duration, then put back exactly as it was.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` also export environment variables, and the
    public getters return resolved defaults, so the previous state is saved where MLflow keeps it
    (its two module globals and the two variables), not through the getters."""
    import os

    from mlflow.tracking import _model_registry, _tracking_service

    t_mod, r_mod = _tracking_service.utils, _model_registry.utils
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved = t_mod._tracking_uri, r_mod._registry_uri, {k: os.environ.get(k) for k in keys}
    t_mod.set_tracking_uri(uri)
    r_mod.set_registry_uri(uri)
    try:
        yield
    finally:
        t_mod._tracking_uri, r_mod._registry_uri = saved[0], saved[1]
        for k, v in saved[2].items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _requirements() -> list[str]:
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={np.__version__}"]


def log_model(sel, export_dir: Path, cfg, card: str, *, register: str | None = None,
              alias: str | None = None) -> dict:
    """Log ``export_dir`` (a best-export folder) as a pyfunc LoggedModel of ``sel.best``'s
    run; with ``register``, a registry version of it (plus ``alias``). Returns what was made."""
    import mlflow
    from mlflow.entities import LoggedModelOutput, Metric

    b = sel.best
    client = mlflow_client(sel.tracking_uri)
    reference = np.load(export_dir / "reference.npy").astype(np.float32)[None]
    sampling = export_dir / "sampling.json"
    atomic_write_text(sampling, json.dumps(sampling_settings(cfg), indent=1))
    model = client.create_logged_model(
        sel.experiment_id, name=MODEL_NAME, source_run_id=b.run_id, model_type="suhmo-generator",
        params={"variant": cfg.model.variant, "step": str(b.step), "selected_on": sel.metric,
                "mode": sel.mode, "search_run_id": sel.parent_run_id},
        tags={NOTE_TAG: card, "suhmo.selection": f"{sel.metric}={b.value:.6g} ({sel.mode}) at step {b.step}"})
    try:
        with fluent_uri(sel.tracking_uri):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME, python_model=str(CODE_FILE), model_id=model.model_id,
                artifacts={"generator": str(export_dir / "generator.ts"), "sampling": str(sampling)},
                signature=signature(),
                input_example=({"reference": reference}, {"frames": 10, "samples": 1, "seed": 0}),
                pip_requirements=_requirements(), step=b.step)
    except Exception as e:  # noqa: BLE001 - leave no half-made model behind, say why in one line
        client.finalize_logged_model(model.model_id, "FAILED")
        raise SuhmoError(f"logging the MLflow model failed: {str(e).splitlines()[0][:200]}") from None
    # the model is an output of the trial run at the selected step, with that step's metrics
    client.log_outputs(b.run_id, [LoggedModelOutput(model.model_id, step=b.step)])
    run = client.get_run(b.run_id)
    linked = [Metric(m.key, m.value, m.timestamp, m.step, model_id=model.model_id, run_id=b.run_id)
              for key in run.data.metrics for m in client.get_metric_history(b.run_id, key)
              if m.step == b.step]
    for i in range(0, len(linked), 500):
        client.log_batch(b.run_id, metrics=linked[i:i + 500])
    client.finalize_logged_model(model.model_id, "READY")
    out = {"model_id": model.model_id, "model_uri": info.model_uri, "linked_metrics": len(linked)}
    if register:
        with fluent_uri(sel.tracking_uri):  # the registry finds the LoggedModel through the fluent URI
            out["registry"] = _register(client, sel, info, card, register, alias)
    return out


def _register(client, sel, info, card: str, name: str, alias: str | None) -> dict:
    """A new version of registered model ``name`` pointing at the logged model (plus ``alias``)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    b = sel.best
    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="SUHMo head-motion generators exported by suhmo best-export")
    # mlflow.register_model also records the version on the LoggedModel (its model page links it)
    mv = mlflow.register_model(info.model_uri, name, tags={
        "metric": sel.metric, "value": f"{b.value:.6g}", "step": str(b.step), "search_run_id": sel.parent_run_id})
    client.update_model_version(name, mv.version, description=card)
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return {"name": name, "version": str(mv.version), "alias": alias, "source": info.model_uri}
