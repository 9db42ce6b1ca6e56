"""A module that imports in the test process but not in a worker (as a broken install or a missing decoder would)."""

import os

if os.environ.get("MEDTL_TEST_IMPORTER") != str(os.getpid()):
    raise RuntimeError("this module cannot be imported here")


def load(study):
    return {"study": study}
