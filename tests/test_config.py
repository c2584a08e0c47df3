import pytest

from suhmo.config import Config, ConfigError, all_keys, make_config


def test_defaults_follow_the_paper():
    c = make_config("paper")
    assert (c.data.obs_len, c.data.seq_len) == (5, 40)
    assert (c.optim.lr_g, c.optim.lr_d, c.optim.beta1, c.optim.beta2) == (2e-5, 1e-5, 0.5, 0.999)
    assert c.loss.lam == 1e-2 and c.model.hidden_g == 1024 and c.model.emb_d == 128
    assert c.train.batch_size == 120


def test_round_trip_through_dict_and_yaml(tmp_path):
    c = make_config("tiny", overrides=["optim.lr_g=3e-4", "windows.family=texp", "model.variant=transformer"])
    again = Config.from_dict(c.to_dict())
    assert again == c
    p = tmp_path / "c.yaml"
    c.save(p)
    assert make_config("paper", yaml_path=p) == c


def test_overrides_are_typed():
    c = make_config("tiny", overrides=["train.iterations=7", "optim.grad_clip=none", "windows.scales=[4, 8]"])
    assert c.train.iterations == 7 and c.optim.grad_clip is None and c.windows.scales == [4, 8]
    with pytest.raises(ConfigError, match="train.iterations.*expected int"):
        make_config("tiny", overrides=["train.iterations=seven"])
    with pytest.raises(ConfigError, match="expected bool"):
        make_config("tiny", overrides=["model.pair_g=3"])


def test_unknown_key_is_named_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lr_gg'.*'optim.lr_g'"):
        make_config("tiny", overrides=["optim.lr_gg=1"])
    p = tmp_path / "bad.yaml"
    p.write_text("model:\n  hiden_g: 12\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*model.hiden_g.*model.hidden_g"):
        make_config("tiny", yaml_path=p)


@pytest.mark.parametrize(
    "override, pattern",
    [
        ("train.batch_size=7", "must be even"),
        ("windows.tau_max=80", "exceeds data.seq_len"),
        ("windows.tau_min=41", r"tau_max=40 < windows.tau_min=41"),
        ("optim.lr_g=-1", "positive"),
        ("windows.family=gauss", "choose one of"),
        ("data.aug_scale_low=2", "low <= high"),
        ("optim.ema_g=1.0", r"optim.ema_g=1.0: must be in \[0, 1\)"),
        ("model.attn_window_g=8", r"model.attn_window_g=8: only the transformer generator has attention"),
        ("loss.r1_frame=-1", "loss.r1_frame"),
        ("model.attn_window_g=0", r"model.attn_window_g=0: must be a positive number of frames or null"),
        ("model.attn_window_g=-4", r"model.attn_window_g=-4: must be a positive"),
        ("model.attn_window_g=2.5", r"model.attn_window_g.*expected int"),
    ],
)
def test_impossible_values_are_rejected(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make_config("tiny", overrides=[override])


def test_attention_window_is_optional():
    assert make_config("paper").model.attn_window_g is None  # the paper's model: full causal attention
    tr = "model.variant=transformer"
    assert make_config("tiny", overrides=[tr, "model.attn_window_g=64"]).model.attn_window_g == 64
    assert make_config("tiny", overrides=[tr, "model.attn_window_g=null"]).model.attn_window_g is None


@pytest.mark.parametrize("overrides, pattern", [
    (["model.g_centred=true", "model.delta=true"], r"model.g_centred=true with model.delta=true"),
    (["loss.r1_frame=1", "loss.adversarial=false"], r"loss.r1_frame=1.0: penalises D_F, which is not trained"),
    (["loss.r1_frame=1", "loss.w_frame=0"], r"loss.r1_frame=1.0: penalises D_F"),
])
def test_options_that_would_do_nothing_are_rejected(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make_config("tiny", overrides=overrides)


def test_every_key_is_addressable():
    c = Config()
    for k in all_keys():
        c.set(k, c.get(k))


def test_registry_choices_are_read_from_the_registries_without_torch():
    """model.variant, model.d_form, model.space and windows.family accept what suhmo.registry
    names (a plug-in registered there is a valid choice), and checking them imports no torch."""
    import subprocess
    import sys

    from suhmo.registry import GENERATORS, TAU_FAMILIES

    with pytest.raises(ConfigError, match=r"windows.family='texpp': choose one of fixed, uniform, texp; did you mean"):
        make_config("tiny", overrides=["windows.family=texpp"])
    TAU_FAMILIES.register("plugin_family", "suhmo.models.windows:tau_uniform")
    try:
        assert make_config("tiny", overrides=["windows.family=plugin_family"]).windows.family == "plugin_family"
    finally:
        TAU_FAMILIES.unregister("plugin_family")
    assert set(GENERATORS) == {"rnn", "transformer", "actor", "hitdvae"}
    code = ("import sys; from suhmo.config import make_config; "
            "make_config('tiny', overrides=['model.variant=transformer', 'model.space=semantic']); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# Deliberate preset changes since the dump at 0cea087: (preset, key) -> value, each with its
# reason in experiments/README.md ("Preset history"). Anything else that differs is a regression.
PRESET_CHANGES_SINCE_0CEA087: dict[tuple[str, str], object] = {
    # the lively recipe (experiments/README.md, "Heads as fast as people and keeping their pose")
    ("cpu", "model.semantic_k"): 12, ("cpu", "model.noise_g"): 32, ("cpu", "loss.w_motion"): 2.5,
    ("cpu", "loss.w_motion_spread"): 5.0, ("cpu", "loss.w_frame"): 1.393, ("cpu", "optim.lr_g"): 5.81e-4,
    ("cpu", "optim.lr_d"): 3.47e-4, ("cpu", "train.eval_every"): 125,
}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_presets_equal_their_values_before_the_yaml_files():
    """Every preset, read from suhmo/presets/NAME.yaml, resolves to the config it resolved to when
    the presets were a dict in config.py (dumped at commit 0cea087), except the deliberate
    changes listed above; keys added since hold their defaults (new options are off)."""
    import json
    from pathlib import Path

    from suhmo.config import Config, PRESETS, make_config

    old = json.loads((Path(__file__).parent / "fixtures" / "presets_0cea087.json").read_text())
    assert list(PRESETS) == ["paper", "small", "cpu", "tiny"]
    default = _flat(Config().to_dict())
    for p in PRESETS:
        now, then = _flat(make_config(p).to_dict()), _flat(old[p])
        assert set(then) <= set(now), (p, set(then) - set(now))
        for key, value in now.items():
            if (p, key) in PRESET_CHANGES_SINCE_0CEA087:
                assert value == PRESET_CHANGES_SINCE_0CEA087[(p, key)] != then.get(key, default[key]), (p, key)
            elif key in then:
                assert value == then[key], (p, key, value, then[key])
            else:
                assert value == default[key], (p, key, "added since 0cea087, not at its default")


def test_each_preset_file_opens_with_its_two_line_rationale():
    from suhmo.presets import HERE

    for path in sorted(HERE.glob("*.yaml")):
        lines = path.read_text().splitlines()
        assert lines[0].startswith("# ") and lines[1].startswith("# ") and not lines[2].startswith("#"), path
