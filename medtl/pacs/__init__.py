"""Hospital integration: pull studies from a PACS, score them, push the results back as DICOM objects.

- :mod:`medtl.pacs.config`: settings from a YAML file / ``MEDTL_PACS_*`` (secrets never printed).
- :mod:`medtl.pacs.dicomweb`: QIDO-RS / WADO-RS / STOW-RS (basic auth or bearer token).
- :mod:`medtl.pacs.dimse`: C-ECHO / C-FIND / C-GET / C-MOVE / C-STORE and a storage SCP.
- :mod:`medtl.pacs.results`: Comprehensive 3D SR, Secondary Capture and fractional SEG (saliency)
  in the source study.
- :mod:`medtl.pacs.workflow`: pull -> :func:`medtl.infer.score` -> push on a resumable work folder
  (``medtl pacs score``).
- :mod:`medtl.pacs.listen`: ``medtl listen``, a storage SCP that scores complete studies.
- :mod:`medtl.pacs.orthanc`: a throw-away local Orthanc (tests, benchmarks, trying it out).

Needs the ``pacs`` extra: ``pip install 'medtl[pacs]'`` (dicomweb-client, pynetdicom, highdicom).
Submodules import those libraries; importing this package does not.
"""

from medtl.pacs.config import PacsConfig, PacsError, load_pacs_config, redact
from medtl.pacs.query import Query, SeriesRef

__all__ = ["PacsConfig", "PacsError", "Query", "SeriesRef", "load_pacs_config", "redact"]
