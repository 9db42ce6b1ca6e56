"""The hand-written tables of docs/benchmarks.md quote the committed JSON under benchmarks/results/ exactly."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
DOC = (ROOT / "docs" / "benchmarks.md").read_text()

#: cpu_memory_format JSON -> (first two cells of its row)
MEMORY_FORMAT_ROWS = {
    "medmnist2d_96px_b32_t1": "| `medmnist2d` Lite0, 96 px | 32, 1 |",
    "medmnist2d_96px_b32_t2": "| `medmnist2d` Lite0, 96 px | 32, 2 |",
    "i3d_64cube_b16_t2": "| I3D Lite0, 64³ | 16, 2 |",
    "i3d_32x64x64_b4_t2": "| I3D Lite0, 32×64×64 | 4, 2 |",
    "acs_64cube_b16_t2": "| ACS Lite0, 64³ | 16, 2 |",
    "25d_64cube_b16_t2": "| 2.5D Lite0, 64³ | 16, 2 |",
}


def _load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


@pytest.mark.parametrize("name", MEMORY_FORMAT_ROWS)
def test_memory_format_rows_are_the_json(name):
    d = _load(f"cpu_memory_format/{name}")
    f, speedup = d["formats"], d["channels_last_speedup"]
    last = "channels_last_3d" if "channels_last_3d" in f else "channels_last"
    cells = []
    for key in ("model_only_images_per_s", "end_to_end_images_per_s"):
        x = f"{speedup[key]:.2f}x"
        x = f"**{x}**" if d["input_shape"] == [1, 96, 96] and key.startswith("end") else x
        cells.append(f"{f['contiguous'][key]:.1f} → {f[last][key]:.1f} ({x})")
    assert f"{MEMORY_FORMAT_ROWS[name]} {cells[0]} | {cells[1]} |" in DOC


def test_memory_format_step_counts_are_the_jsons():
    steps = {name: _load(f"cpu_memory_format/{name}")["steps"] for name in MEMORY_FORMAT_ROWS}
    two_d = {s for n, s in steps.items() if n.startswith("medmnist2d")}
    three_d = {s for n, s in steps.items() if not n.startswith("medmnist2d")}
    assert two_d == {15} and "15 steps (2D)" in DOC
    assert f"or {min(three_d)}-{max(three_d)} (3D: " in DOC


def test_batch_scoring_rows_are_the_json():
    for r in _load("bench_score")["results"]:
        row = (f"| {r['input'].upper()} | {r['engine']} | {r['workers']} | {r['studies_per_s']:.1f} | "
               f"{r['decode_fraction']:.2f} | {r['wait_fraction'] * 100:.0f} % |")
        assert row in DOC


def test_gpu_rows_are_the_json():
    res = _load("gpu_h200")["results"]
    for name in ("bench_lite0_96_b32_fp32", "bench_lite0_96_b32_bf16_cl", "bench_lite0_96_b32_bf16_cl_compile",
                 "bench_lite0_96_b256_bf16_cl", "bench_lite0_i3d_64_b16_bf16_cl"):
        r = res[name]
        assert f"| {r['model_only_images_per_s']:.0f} | {r['end_to_end_images_per_s']:.0f} |" in DOC, name


def test_the_gpu_figures_say_they_come_from_three_device_calls():
    assert "three device calls" in _load("gpu_h200")["note"]
    assert "assembled by hand from three device calls" in " ".join(DOC.split())


@pytest.mark.parametrize("model", ["xray", "ct"])
def test_ood_false_alarms_are_the_json(model):
    m = _load("ood")["models"][model]
    fa = m["false_alarm"]
    row = (f"| false alarms on the ID test split | **{fa['mahalanobis']:.3f}** | {fa['knn']:.3f} | "
           f"{fa['energy']:.3f} | {fa['msp']:.3f} |")
    assert row in DOC
    assert f"ID test n = {m['n_id_test']}" in DOC


def test_readme_quotes_the_fixed_subset_spread_of_the_generated_section():
    readme = (ROOT / "README.md").read_text()
    spread = DOC.split("Spread, imagenet start: training-seed sd within a subset ", 1)[1]
    imagenet = float(spread.split(" ", 1)[0])
    scratch = float(spread.split("scratch start: training-seed sd within a subset ", 1)[1].split(" ", 1)[0])
    subsets = DOC.count("| 0, 1, 2 | ")  # one table row per fixed subset
    words = {2: "two", 3: "three", 4: "four"}[subsets]
    assert (f"over {words} fixed\nsubsets, training-seed sd {imagenet:.3f} against scratch's {scratch:.3f}"
            in readme)


def test_series_reading_rows_are_the_json():
    d = _load("bench_io")
    rows = {"`medtl.io.dicom.read_series`": (d["medtl_best_s"], d["median_medtl_s"]),
            "`read_series` plus a C-contiguous copy (the layout MONAI returns)":
                (d["medtl_plus_contiguous_copy_best_s"], d["median_medtl_plus_contiguous_copy_s"]),
            "MONAI `LoadImage(reader=\"PydicomReader\")`": (d["monai_best_s"], d["median_monai_s"])}
    for reader, (best, median) in rows.items():
        assert f"| {reader} | {best:.2f} s | {median:.2f} s |" in DOC
    assert f"best of {d['repeat']} |" in DOC and d["command"] in DOC and d["arrays_identical"]
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert (f"{d['medtl_best_s']:.2f} s with medtl ({d['medtl_plus_contiguous_copy_best_s']:.2f} s with the "
            f"C-contiguous copy MONAI's array comes as) vs {d['monai_best_s']:.2f} s with MONAI's") in readme


def test_the_demo_table_and_time_are_the_json():
    spec = importlib.util.spec_from_file_location("bench_demo", ROOT / "benchmarks" / "bench_demo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    d = _load("demo")
    assert mod.table(d["arms"]) in DOC
    doc, readme = " ".join(DOC.split()), " ".join((ROOT / "README.md").read_text().split())
    seconds = f"{d['seconds']:.0f} s on 2 idle CPU cores"
    assert seconds in doc and seconds in readme and d["command"] in doc
    base, preset = d["arms"]["baseline"]["B"], d["arms"]["domain_shift"]["B"]
    (tn, fp), _ = base["confusion_matrix"]
    assert base["min_p_lesion"] > 0.99 and (f"{fp} of {tn + fp} normal slices called positive at its site-A "
                                             f"threshold, ECE {base['ece']:.2f}); the preset's ECE is "
                                             f"{preset['ece']:.2f}") in doc


def test_the_3d_saliency_figures_on_the_current_cohort_are_the_json():
    d = _load("saliency_3d_demo_ct3d_cohort2")
    r = d["results"]["3d"]
    rc, b, a = r["run_card"], r["groups"]["test/B"], r["ablation"]
    default = b["methods"]["HiResCAM, strides 4+8"]
    doc = " ".join(DOC.split())
    assert (f"gives run test AUC {rc['test_auc']:.3f} ({rc['test_n']} site-A `ct3d` volumes; best epoch "
            f"{rc['best_epoch']} of {rc['epochs_run']}; {rc['train_seconds'] / 60:.1f} min of training on "
            f"{rc['threads']} thread") in doc
    assert (f"HiResCAM 4+8 points at {default['hits']}/{b['n']} positives (mass ratio {default['mass_ratio']:.1f}, "
            f"deletion {default['deletion']:.2f}; no candidate above "
            f"{max(m['hits'] for m in b['methods'].values())}/{b['n']})") in doc
    assert f"dropped for {a['dropped']}/{a['n']} test positives (mean {a['mean_p_with']:.3f} → " in doc
    assert d["command"] in DOC


def test_the_false_alarms_at_the_earlier_quantile_are_the_json():
    q95, q975 = _load("ood_q095")["models"]["xray"], _load("ood")["models"]["xray"]
    assert (q95["quantile"], q975["quantile"]) == (0.95, 0.975)
    doc = " ".join(DOC.split())
    assert (f"At the earlier default quantile, 0.95, the X-ray model flagged "
            f"{q95['false_alarm']['mahalanobis'] * 100:.1f} % of its own test split; 0.975 flags "
            f"{q975['false_alarm']['mahalanobis'] * 100:.1f} % (`benchmarks/results/ood_q095.json`") in doc


def test_readmes_transfer_rows_are_the_json():
    """README's 'Earlier recipe' rows quote benchmarks/results/transfer.json (the docs' section is the script's own)."""
    runs = {(r["weights"], r["train_fraction"]): r for r in _load("transfer")["results"]}
    readme = (ROOT / "README.md").read_text()

    def cell(r):
        lo, hi = r["test_auc_ci"]
        return f"{r['test_auc']:.3f} ({lo:.3f}–{hi:.3f}"

    for fraction, label in ((1.0, "| 4 epochs, all training data (`benchmarks/transfer.py`) | "),
                            (0.1, "| 4 epochs, 10% of training data | ")):
        row = next(line for line in readme.splitlines() if line.startswith(label))
        assert cell(runs["imagenet", fraction]) in row and cell(runs["scratch", fraction]) in row


def test_the_pneumoniamnist_recipe_table_is_its_committed_card():
    card = _load("pneumoniamnist_effnet_lite0_card")
    t, ci = card["metrics"]["test"], card["metrics"]["test"]["ci"]
    from medtl.train.metrics import auc_interval, exact_intervals

    exact = exact_intervals(t["confusion_matrix"])
    (tn, fp), (fn, tp) = t["confusion_matrix"]
    lo, hi = auc_interval(t["auc"], fn + tp, tn + fp)
    assert f"| AUC | **{t['auc']:.3f}** | {lo:.3f}–{hi:.3f} (Newcombe) |" in DOC
    assert f"holds stratified bootstrap intervals (AUC {ci['auc'][0]:.3f}–{ci['auc'][1]:.3f})" in " ".join(DOC.split())
    assert f"| accuracy | {t['accuracy']:.3f} | {exact['accuracy'][0]:.3f}–{exact['accuracy'][1]:.3f} (exact) |" in DOC
    (sens_lo, sens_hi), (spec_lo, spec_hi) = exact["sensitivity"], exact["specificity"]
    assert (f"| sensitivity / specificity | {t['sensitivity']:.3f} / {t['specificity']:.3f} | {sens_lo:.3f}–{sens_hi:.3f}"
            f" / {spec_lo:.3f}–{spec_hi:.3f} (exact) |") in DOC
    assert f"validation AUC (epoch {card['training']['best_epoch']})" in DOC
    readme = (ROOT / "README.md").read_text()
    assert f"| **{t['auc']:.3f}** ({ci['auc'][0]:.3f}–{ci['auc'][1]:.3f}) |" in readme


def test_readmes_interval_coverage_is_the_json():
    result = _load("bootstrap_coverage")
    rows = {(r["true_auc"], r["n_pos"], r["n_neg"], r["sd_pos"]): r for r in result["rows"]}
    readme = " ".join((ROOT / "README.md").read_text().split())
    small = rows[(0.96, 15, 15, 1.0)]

    def pct(v):
        return f"{100 * v:.1f}"

    assert (f"its AUC interval held the true value in {pct(small['bootstrap_only']['held']['auc'])} % of "
            f"{result['sims']:,} simulated test sets (Newcombe's: {pct(small['coverage']['held']['auc'])} %), and its "
            f"sensitivity interval in {pct(small['bootstrap_only']['held']['sensitivity'])} %, where the exact one "
            f"does in {pct(small['coverage']['held']['sensitivity'])} %") in readme
    assert {r["sd_pos"] for r in rows.values()} == {1.0, 2.0} and (0.76, 20, 180, 2.0) in rows
    assert {(r["n_pos"], r["n_neg"]) for r in rows.values()} == {(15, 15), (50, 50), (150, 150), (20, 180)}
    boot = [r["bootstrap_only"]["held"]["auc"] for r in rows.values()]
    newcombe = [r["coverage"]["held"]["auc"] for r in rows.values()]
    assert (f"the bootstrap's AUC interval held it in {pct(min(boot))}-{pct(max(boot))} %, Newcombe's in "
            f"{pct(min(newcombe))}-{pct(max(newcombe))} %") in readme
    worse = [r for r in rows.values() if r["coverage"]["held"]["auc"] < r["bootstrap_only"]["held"]["auc"]]
    lowest = min(worse, key=lambda r: r["coverage"]["held"]["auc"])
    assert {(r["true_auc"], r["sd_pos"]) for r in worse} == {(0.76, 2.0)}
    assert (f"Newcombe's held it less often than the bootstrap's in {len(worse)} of the {len(rows)} cells, all at a true "
            f"AUC of 0.76 with the positives' scores twice as spread (lowest: {pct(lowest['coverage']['held']['auc'])} % "
            f"against {pct(lowest['bootstrap_only']['held']['auc'])} % at {lowest['n_pos']} positives to "
            f"{lowest['n_neg']} negatives)") in readme
    assert "AUC: Newcombe 2006 method 5" in result["method"]


def test_readmes_slice_latency_is_the_json():
    r = _load("app_latency")
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert r["slice_px"] == [512, 512]
    assert (f"from the wheel to the redrawn 512² slice in headless Chromium, p50 {r['p50_ms']:.0f} ms and p90 "
            f"{r['p90_ms']:.0f} ms over {r['events']} events") in readme
