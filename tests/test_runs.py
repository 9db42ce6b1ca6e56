"""medtl.runs: the memory layout training uses on each device, applied without breaking any model."""

from __future__ import annotations

import pytest
import torch

from medtl import models
from medtl.runs import channels_last, memory_format, to_memory_format

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_channels_last_on_a_gpu_and_for_2d_on_a_cpu():
    assert memory_format(CUDA, 2) is torch.channels_last
    assert memory_format(CUDA, 3) is torch.channels_last_3d
    assert memory_format(CPU, 2) is torch.channels_last
    assert memory_format(CPU, 3) is torch.contiguous_format  # not faster at every 3D shape
    assert memory_format(torch.device("mps"), 2) is torch.contiguous_format  # not measured
    assert channels_last(2) is torch.channels_last and channels_last(3) is torch.channels_last_3d


@pytest.mark.parametrize("inflate", ["acs", "2.5d"])
def test_3d_models_with_2d_kernels_take_channels_last_3d_and_compute_the_same(inflate):
    """``model.to(memory_format=torch.channels_last_3d)`` raises on ACS's and 2.5D's 2D kernels (which a
    GPU run with the default ``train.channels_last`` hit); converting by rank keeps those as they are."""
    torch.manual_seed(0)
    model = models.create("resnet18", in_channels=1, spatial_dims=3, inflate=inflate, num_classes=2).eval()
    x = torch.randn(2, 1, 8, 16, 16)
    with torch.no_grad():
        ref = model(x)
    with pytest.raises(RuntimeError, match="rank 5"):
        model.to(memory_format=torch.channels_last_3d)
    to_memory_format(model, torch.channels_last_3d)
    with torch.no_grad():
        out = model(x.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_2d_model_converted_and_back_keeps_its_weights_exactly():
    torch.manual_seed(0)
    model = models.create("efficientnet_lite0", in_channels=1, num_classes=2).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        ref = model(x)
    to_memory_format(model, torch.channels_last)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    with torch.no_grad():
        torch.testing.assert_close(model(x.contiguous(memory_format=torch.channels_last)), ref, rtol=1e-4, atol=1e-5)
    to_memory_format(model, torch.contiguous_format)
    assert all(w.is_contiguous() for w in convs)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_run_folder_that_does_not_exist_is_named_as_missing(tmp_path):
    """A mistyped --model said 'no model_card.json', as if the folder were there but not a run."""
    from medtl.errors import MedtlError
    from medtl.runs import read_card

    with pytest.raises(MedtlError) as err:
        read_card(tmp_path / "runs" / "pneu")
    assert str(err.value) == f"{tmp_path / 'runs' / 'pneu'}: no such folder (give a run directory written by `medtl train`)"
    with pytest.raises(MedtlError, match=r"notarun: no model_card.json \(give a run directory"):
        read_card((tmp_path / "notarun").mkdir() or tmp_path / "notarun")


def test_a_card_whose_preprocessing_is_not_valid_names_the_card(tmp_path):
    """An edited or damaged card's preprocessing gave the schema's line without saying which file held it."""
    import json

    from medtl.errors import MedtlError
    from medtl.runs import load_run

    from .conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    card = json.loads((run / "model_card.json").read_text())
    card["preprocessing"]["window"] = "bogus"
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(MedtlError, match=rf"^{run / 'model_card.json'}: its preprocessing is not valid \(.*window.*\); "
                                         "retrain, or restore model_card.json$"):
        load_run(run)



@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"].update(in_channels=10**9), r"model.in_channels is 1000000000, not the preprocessing's 1 "
                                                      r"channel\(s\)"),
    (lambda c: c["preprocessing"].update(size=[10**5, 10**5]), r"its preprocessing is not valid \(.*over the limit "
                                                                r"of .*MEDTL_MAX_VOXELS.*\); retrain"),
])
def test_a_card_that_would_size_the_network_or_its_input_beyond_reason_is_one_line(tmp_path, edit, message):
    """in_channels 10^9 asked torch for a first convolution of gigabytes, and a size of 10^5 x 10^5 resized every
    scan to 10^10 values before failing: internal errors after minutes, not a line naming the card."""
    import json

    from medtl.errors import MedtlError
    from medtl.runs import load_run

    from .conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    card = json.loads((run / "model_card.json").read_text())
    edit(card)
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(MedtlError, match=rf"^{run / 'model_card.json'}: {message}"):
        load_run(run)

def test_a_device_this_machine_lacks_is_one_line_naming_it(monkeypatch):
    """``--device cuda:7`` was torch's AssertionError ("Torch not compiled with CUDA enabled") mid-load: an
    internal error on the command line."""
    from medtl.errors import MedtlError
    from medtl.runs import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MedtlError, match=r"^device 'cuda': this machine has no CUDA GPU that torch can use; use auto"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(MedtlError, match=r"^device 'cuda:7': this machine has 2 CUDA GPU\(s\), cuda:0 to cuda:1;"):
        resolve_device("cuda:7")
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(MedtlError, match=r"^device 'mps': Apple's MPS is not available"):
        resolve_device("mps")
    assert resolve_device("cpu") == CPU


def test_a_run_being_trained_says_to_wait_not_to_resume_it(tmp_path):
    """`medtl evaluate` during a `train --resume` said 'interrupted? resume it', while it was running."""
    from medtl.errors import MedtlError
    from medtl.runs import read_card

    from .conftest import lock_held_elsewhere

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(b"")
    with lock_held_elsewhere(run / ".train.lock") as held:
        with pytest.raises(MedtlError) as busy:
            read_card(run)
        assert str(busy.value) == (f"{run}: a `medtl train` (pid {held.pid}) is writing this run now, so it has no "
                                   "model card yet: wait for it to finish")
    with pytest.raises(MedtlError, match=r"did not finish \(interrupted\?\)"):  # its holder gone: resume it
        read_card(run)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"].update(num_classes=10**9), r"model.num_classes is 1000000000, not the number of "
                                                       r"class_names \(2\)"),
    (lambda c: c.update(class_names=[f"c{i}" for i in range(10**5)]), r"model.num_classes is 2, not the number "
                                                                       r"of class_names \(100,000\)"),
    (lambda c: c.update(class_names="ab"), r"class_names is not a list of two or more class names"),
    (lambda c: c.update(threshold=1e308), r"threshold '1e\+308' is not a probability between 0 and 1"),
    (lambda c: c.update(threshold="0.5"), r"threshold '0.5' is not a probability between 0 and 1"),
])
def test_card_values_no_training_writes_are_refused_before_use(tmp_path, edit, message):
    """num_classes 10^9 asked torch for 2 TB (an internal error), a threshold of 1e308 said no to every scan and
    class_names "ab" read as classes a and b, without a word; 10^5 names were all listed in one error line."""
    import json

    from medtl.errors import MedtlError
    from medtl.runs import read_card

    from .conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    card = json.loads((run / "model_card.json").read_text())
    edit(card)
    (run / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(MedtlError, match=rf"^{run / 'model_card.json'}: {message} \(retrain, or restore "
                                         r"model_card.json\)$"):
        read_card(run)


def test_a_huge_or_deeply_nested_card_is_one_line(tmp_path, monkeypatch):
    """A 1,000-deep card was a RecursionError (an internal error); a 500 MB one was read whole (1.5 GB)."""
    from medtl import runs
    from medtl.errors import MedtlError

    (tmp_path / "model_card.json").write_text('{"a": ' * 1000 + "1" + "}" * 1000)
    with pytest.raises(MedtlError, match=r"model_card.json: damaged model card \(nested too deeply\); retrain"):
        runs.read_card(tmp_path)
    monkeypatch.setattr(runs, "MAX_CARD_BYTES", 100)
    (tmp_path / "model_card.json").write_text("{" + " " * 100 + "}")
    with pytest.raises(MedtlError, match=r"model_card.json: over 100 bytes, too large for a model card"):
        runs.read_card(tmp_path)


def test_damaged_ood_statistics_name_their_file(tmp_path):
    """A garbage or foreign ood.safetensors, or a threshold that is not a number, was an internal error."""
    import json

    from medtl.errors import MedtlError
    from medtl.infer import Predictor

    from .conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    card = json.loads((run / "model_card.json").read_text())
    card["ood"] = {"method": "mahalanobis", "thresholds": {"mahalanobis": 1.0}, "file": "ood.safetensors"}
    (run / "model_card.json").write_text(json.dumps(card))
    (run / "ood.safetensors").write_bytes((run / "model.safetensors").read_bytes())
    with pytest.raises(MedtlError, match=r"ood.safetensors: out-of-distribution statistics do not load "
                                         r"\(SafetensorError: File does not contain tensor means\); restore"):
        Predictor.from_run(run, device="cpu")
    (run / "ood.safetensors").write_bytes(b"\xff" * 100)
    with pytest.raises(MedtlError, match=r"ood.safetensors: out-of-distribution statistics do not load "
                                         r"\(SafetensorError: .*header"):
        Predictor.from_run(run, device="cpu")


def test_a_2d_card_loads_whatever_its_unused_inflate_says(tmp_path):
    """A 2D run trained before misspelt inflate modes were refused keeps loading."""
    import json

    from medtl.runs import load_run

    from .conftest import write_untrained_run

    run = write_untrained_run(tmp_path / "run")
    card = json.loads((run / "model_card.json").read_text())
    assert card["model"]["spatial_dims"] == 2
    card["model"]["inflate"] = "centre"
    (run / "model_card.json").write_text(json.dumps(card))
    assert load_run(run)[0].spatial_dims == 2
