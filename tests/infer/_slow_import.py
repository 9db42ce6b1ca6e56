"""A module that takes seconds to import, like a worker's first import of torch and MONAI on a busy machine."""

import time

time.sleep(3)


def load(study):
    return {"study": study}
