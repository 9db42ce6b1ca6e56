import numpy as np

from medtl.guard import check_outputs


def test_constant_outputs_are_degenerate():
    p = np.tile([0.3, 0.7], (20, 1))
    v = check_outputs(p, np.array([0, 1] * 10))
    assert v["degenerate"] and "near-constant" in v["reasons"][0] and v["output_sd"] < 1e-12


def test_chance_level_auc_is_degenerate_and_a_good_model_is_not():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(size=40)
    p = np.stack([1 - p1, p1], 1)
    assert check_outputs(p, np.array([0, 1] * 20), auc_ci=(0.41, 0.62))["degenerate"]
    ok = check_outputs(p, np.array([0, 1] * 20), auc_ci=(0.81, 0.95))
    assert not ok["degenerate"] and ok["reasons"] == []
