"""The 3-D motion space (model.space=pose3d): explicit head rotation, an expression code and the
reference's face shape held fixed (suhmo.models.pose3d)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from suhmo.config import ConfigError, make_config
from suhmo.metrics.fidelity import pose_proxies
from suhmo.models import build_generator
from suhmo.models.pose3d import Pose3DSpace, angles, fit_pose, rotation, unit_mean_face

from test_train import split  # noqa: F401 - the tiny synthetic train/eval split (fixture)
from test_space import tiny_cfg


def fitted(split, k=6):
    from suhmo.data import BatchSampler

    cfg = tiny_cfg(**{"model.space": "pose3d", "model.semantic_k": k})
    space = Pose3DSpace(k)
    windows = BatchSampler(split[0], cfg, seed=3, batch_size=64).next()
    space.fit(None, windows, cfg.model.vel_scale)
    return space


def test_rotation_and_angles_invert_each_other():
    a = torch.tensor([[0.3, -0.2, 0.1], [-1.0, 0.4, -0.5], [0.0, 0.0, 0.0]], dtype=torch.float64)
    r = rotation(a[:, 0], a[:, 1], a[:, 2])
    assert torch.allclose(r @ r.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand(3, 3, 3), atol=1e-12)
    assert torch.allclose(torch.det(r), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(torch.stack(angles(r), -1), a, atol=1e-10)


def test_fit_pose_recovers_a_known_view_of_the_mean_face():
    m = torch.as_tensor(unit_mean_face())
    yaw, pitch, roll = torch.tensor([0.6, -0.3]), torch.tensor([-0.25, 0.2]), torch.tensor([0.15, -0.1])
    r = rotation(yaw, pitch, roll).double()
    x = 0.3 * (m @ r[:, :2].transpose(-1, -2))  # [2, 68, 2], a scaled weak-perspective view
    xc, shape = x - x.mean(-2, keepdim=True), (m - m.mean(0)).expand(2, 68, 3)
    s, rr = fit_pose(torch.einsum("npc,npd->ncd", shape, shape), torch.einsum("npc,npj->ncj", shape, xc))
    assert torch.allclose(s, torch.full((2,), 0.3, dtype=torch.float64), atol=1e-9)
    got = torch.stack(angles(rr), -1)
    assert torch.allclose(got, torch.stack([yaw, pitch, roll], -1).double(), atol=1e-6)


def test_the_reference_decodes_to_itself_and_the_components_are_orthonormal(split):
    space = fitted(split)
    b = space.basis.double()
    assert torch.allclose(b.t() @ b, torch.eye(b.shape[1], dtype=torch.float64), atol=1e-4)
    obs = torch.as_tensor(np.stack([c[:3] for c in split[1].clips[:4]]))
    back = space.decode(space.encode(obs), space.context(obs))
    assert torch.allclose(back[:, 0], obs[:, 0], atol=1e-4)
    # the frames after the reference: only pose and expression may change, within a few % of the face
    radius = (obs - obs.mean(-2, keepdim=True)).pow(2).sum(-1).mean(-1).sqrt()
    assert float((space.round_trip_error(obs) / radius).max()) < 0.1


def test_the_person_is_fixed_by_the_reference_and_a_turned_head_stays_turned(split):
    space = fitted(split)
    obs = torch.as_tensor(np.stack([split[1].clips[0][:1], split[1].clips[-1][:1]]))  # two references
    ctx = space.context(obs)
    raw = space.raw(obs[:1, :1]).expand(2, 5, -1).clone()  # one state sequence for both
    raw[:, :, 6:] += torch.linspace(0, 1, 5)[:, None] * space.scale[6:]  # an expression moves
    out = space.from_raw(raw, ctx)
    # every frame of a sequence is its reference's shape plus a change with no identity component
    change = space.shapes(raw, ctx) - ctx.unsqueeze(1)
    assert float(change.abs().max()) > 1e-3
    ident = change.flatten(2) @ space.basis[:, :space.k_id]
    assert float(ident.abs().max()) < 1e-5
    # and the identity fitted back from the decoded frames stays within a few % of the reference's
    for b in range(2):
        _, _, _, coef = space.solve(out[b])
        fit = coef[:, :space.k_id]
        assert float((fit - fit[:1]).abs().max()) < 0.1 * float(fit[:1].abs().max() + 1e-3)
    # and a yaw of +-35 degrees turns the nose to opposite sides, as the metric's proxy reads it
    turned = space.raw(obs[:1, :1]).expand(2, 1, -1).clone()
    turned[:, 0, 3] = torch.tensor([math.radians(35), -math.radians(35)])
    yaw = pose_proxies(space.from_raw(turned, ctx[:1].expand(2, 68, 3)).numpy())["yaw"]
    assert yaw[0, 0] * yaw[1, 0] < 0 and abs(yaw[0, 0]) > 0.1


def test_encoding_has_finite_gradients(split):
    space = fitted(split)
    x = torch.as_tensor(np.stack([c[:8] for c in split[0].clips[:3]])).requires_grad_(True)
    space.encode(x).pow(2).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_config_rules_and_bad_sizes():
    cfg = make_config("tiny", overrides={"model.space": "pose3d", "model.d_semantic": True, "model.d_anchor": True})
    assert cfg.model.space == "pose3d"
    with pytest.raises(ConfigError, match="g_centred"):
        make_config("tiny", overrides={"model.space": "pose3d", "model.g_centred": True})
    with pytest.raises(Exception, match="expression components"):
        Pose3DSpace(0)
    with pytest.raises(Exception, match="cannot fit"):
        Pose3DSpace(4).fit(None, np.zeros((1, 3, 68, 2), np.float32), 1.0)


def test_training_in_pose3d_space_checkpoints_and_generates(split, tmp_path):
    from suhmo.generate import load_model, sample
    from suhmo.train import Trainer, motion_stats_metrics

    over = {"model.space": "pose3d", "model.semantic_k": 6, "model.noise_g": 3, "model.revert": True,
            "model.d_semantic": True, "model.d_anchor": True}
    cfg = tiny_cfg(**over)
    tr, ev = split
    t = Trainer(cfg, tmp_path / "run", train_set=tr, eval_set=ev, metrics_fn=motion_stats_metrics(cfg, ev))
    basis = t.G.space.basis.clone()
    assert bool(t.G.space.fitted)
    t.fit()
    assert torch.equal(t.G.space.basis, basis)
    G, _ = load_model(tmp_path / "run" / "last.pt")
    assert torch.equal(G.space.basis, basis)
    refs = np.stack([ev.clips[0][0], ev.clips[-1][0]] * 2).astype(np.float32)
    out = sample(G, refs, 20, seed=1)
    assert out.shape[1] >= 20 and np.isfinite(out).all()
    assert np.allclose(out[:, 0], refs, atol=1e-4)  # sequences start at their reference
    assert g_built(cfg)


def g_built(cfg) -> bool:
    return build_generator(cfg).space.dim == 6 + cfg.model.semantic_k
