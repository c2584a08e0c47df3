"""``suhmo generate``: head-motion sequences from one reference pose."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("generate")
@click.option("--checkpoint", "checkpoint", type=click.Path(), default=None,
              help="Training checkpoint (last.pt / best.pt) or a training output folder.")
@click.option("--model", "model_dir", type=click.Path(), default=None,
              help="Exported model folder (generator.pt + config.yaml).")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="Reference pose POSE.npy, a [68, 2] array (pixels or the normalised [0, 1] frame).")
@click.option("--reference-from", "reference_from", metavar="DATA.npz[:CLIP]", default=None,
              help="Use the first frame of clip CLIP (default 0) of a canonical landmark file.")
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Detect the reference pose in a face image (needs MediaPipe: run it as "
                   ".venv-video/bin/suhmo, README 'Real videos').")
@click.option("--frames", type=click.IntRange(min=1), default=120, show_default=True,
              help="Generated frames after the reference (each output clip has FRAMES + 1).")
@click.option("--samples", type=click.IntRange(min=1), default=4, show_default=True,
              help="Sequences to generate from the reference.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (partner and initial velocity).")
@click.option("--init-vel", type=click.FloatRange(min=0), default=None,
              help="Range r of the random initial velocity U(-r, r)^2; default: the model's eval.init_vel.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--out", "out_path", type=click.Path(dir_okay=False), required=True,
              help="Output .npz in the canonical landmark format (one clip per sample).")
def generate(checkpoint, model_dir, reference, reference_from, image, frames, samples, seed, init_vel,
             device, out_path):
    """Generate SAMPLES diverse sequences of FRAMES frames from one reference pose."""
    import numpy as np

    from suhmo import generate as gen
    from suhmo.data import LandmarkSet, save_landmarks
    from suhmo.utils import SuhmoError, check_memory, check_output_path, pick_device

    if (checkpoint is None) == (model_dir is None):
        raise SuhmoError("give exactly one of --checkpoint CK or --model DIR")
    refs_given = [x is not None for x in (reference, reference_from, image)]
    if sum(refs_given) != 1:
        raise SuhmoError("give exactly one of --reference POSE.npy, --reference-from DATA.npz[:CLIP], "
                         "--image FACE.jpg")
    if not out_path.lower().endswith(".npz"):
        raise SuhmoError(f"--out {out_path}: the output is a landmark .npz file")
    check_output_path(out_path, "--out")  # before loading and generating, not after
    dev = pick_device(device)
    # the output alone, before anything is loaded (the model's own needs are checked with it)
    check_memory(samples * (frames + 1) * 68 * 2 * 4 * 2, f"--frames {frames} x --samples {samples}",
                 "generate fewer or shorter sequences")
    G, cfg = gen.load_model(checkpoint if checkpoint is not None else model_dir, dev)
    if reference is not None:
        ref = gen.reference_from_pose_file(reference, cfg)
        source = str(reference)
    elif reference_from is not None:
        ref = gen.reference_from_dataset(reference_from, cfg)
        source = str(reference_from)
    else:
        ref = gen.reference_from_image(image, cfg)
        source = str(image)
    gen.check_generation_size(cfg, samples, frames, f"--frames {frames} x --samples {samples}")
    refs = np.repeat(ref[None], samples, axis=0)
    r = cfg.eval.init_vel if init_vel is None else init_vel
    seqs = gen.sample(G, refs, frames, seed, init_vel=r, device=dev, cfg=cfg)
    ls = LandmarkSet(
        clips=[s for s in seqs], fps=cfg.data.fps,
        meta={"sample": np.arange(samples, dtype=np.int64), "person": np.array(["generated"] * samples),
              "source": np.array([source] * samples)},
        attrs={"normalized": np.asarray(cfg.data.normalize), "generator": np.asarray(cfg.model.variant),
               "seed": np.asarray(seed)},
    )
    save_landmarks(out_path, ls)
    finite = np.isfinite(seqs).all(axis=(1, 2, 3)).mean()
    click.echo(f"wrote {samples} sequence(s) of {frames + 1} frames ({cfg.model.variant}, seed {seed}) "
               f"to {Path(out_path)}" + ("" if finite == 1 else f"; WARNING: {1 - finite:.0%} contain NaN/inf"))
