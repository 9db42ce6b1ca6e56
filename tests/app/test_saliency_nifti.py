"""The page's "Saliency NIfTI" download holds the map of the model selected now."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from medtl.app.app import ANALYZE_OUTPUTS, DEFAULT_METHOD_LABEL, METHODS, MedtlApp
from medtl.demo.cohort import sample_path
from medtl.infer import Predictor
from medtl.io import load_scan

from tests.conftest import write_untrained_run


def quiet(*args, **kwargs) -> None:
    """A progress callback that shows nothing."""


def test_the_saliency_nifti_of_another_model_is_written_again_not_the_first_models(run3d, tmp_path):
    """The NIfTI's name says the scan and method, not the model: after a model change the page offered the file
    written for the model before (it was written only when missing)."""
    other = write_untrained_run(tmp_path / "untrained", ("0", "1"), spatial_dims=3)
    app = MedtlApp({"tiny3d": run3d, "untrained": other}, device="cpu")
    nii, method = sample_path("ct3d"), METHODS[DEFAULT_METHOD_LABEL]
    out = dict(zip(["state", *ANALYZE_OUTPUTS], app.analyze(None, [str(nii)], None, "tiny3d", DEFAULT_METHOD_LABEL,
                                                             0.4, progress=quiet)))
    s = out["state"]
    first = out["saliency_nifti"]["value"]
    *_, nifti = app.change_model(s, "untrained", DEFAULT_METHOD_LABEL, "axial", 16, 40, 400, 0.4, progress=quiet)
    assert nifti["value"] == first  # the same name
    data = np.asarray(nib.load(nifti["value"]).dataobj)
    pred = Predictor.from_run(other, device="cpu")
    expected = pred.saliency(load_scan(nii), method, target=pred.class_names.index(s.prediction.decision))[0].array
    np.testing.assert_array_equal(data, expected.reshape(data.shape).astype(data.dtype))
