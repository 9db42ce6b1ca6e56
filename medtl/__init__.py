"""medtl: transfer learning for medical imaging.

Load scans (``medtl.io``), adapt ImageNet backbones to grayscale and 3D
(``medtl.models``), fine-tune (``medtl.train``), explain (``medtl.explain``) and
serve (``medtl.infer``, ``apps/``).
"""

__version__ = "0.1.0"
