"""medtl: transfer learning for medical imaging.

One package per part, each importing only the parts below it (``tests/test_layering.py``
checks this):

- ``medtl.io``: scans (DICOM files, series and zips, NIfTI, PNG/JPEG/TIFF) into one ``Scan``;
- ``medtl.models``: backbones on MONAI's networks, ImageNet weights, gray and 3D adaptation;
- ``medtl.transforms``: the one preprocessing pipeline (MONAI), augmentation, domain shift;
- ``medtl.data``: cohorts (manifest, class folders, MedMNIST) and patient-grouped splits;
- ``medtl.explain``: saliency maps and overlays;
- ``medtl.guard``: when not to answer (training domain, out-of-distribution score, collapse);
- ``medtl.runs``: the run folder and model card, the contract between training and serving;
- ``medtl.train``: fine-tuning recipes, metrics, plots (writes runs);
- ``medtl.infer``: prediction and batch scoring (reads runs; never imports ``medtl.train``);
- ``medtl.demo``: the synthetic sample cohort and ``medtl demo``;
- ``medtl.app``: the Gradio app (only the CLI imports it);
- ``medtl.cli``: the ``medtl`` command; ``medtl/configs/``: the shipped recipes.
"""

__version__ = "0.1.0"
