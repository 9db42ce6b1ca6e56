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


def test_chance_is_not_judged_on_a_validation_split_too_small_for_any_interval_to_exclude_it():
    """Newcombe's interval of a perfect ranking of 2 + 2 validation images is 0.386-1: judged on it, every model
    trained with so small a validation split was flagged as having learnt nothing (sample_tiny's was)."""
    from medtl.guard.ood import FEW_VALIDATION
    from medtl.train.metrics import auc_interval

    few = FEW_VALIDATION - 1
    p1 = np.linspace(0.1, 0.9, few)
    p = np.stack([1 - p1, p1], 1)
    labels = (p1 > 0.5).astype(int)
    ci = auc_interval(1.0, 2, 2)
    assert ci[0] < 0.5
    small = check_outputs(p, labels, auc_ci=ci)
    assert not small["degenerate"] and small["chance_judged"] is False
    assert check_outputs(np.tile([0.3, 0.7], (few, 1)), labels, auc_ci=ci)["degenerate"]  # constant: still flagged
    enough = check_outputs(np.tile(p, (2, 1))[:FEW_VALIDATION], np.tile(labels, 2)[:FEW_VALIDATION], auc_ci=ci)
    assert enough["degenerate"] and enough["chance_judged"] is True
