"""Run another benchmark script with ``--memory low`` holding as stored only the float weights
of at least N elements (the runtime's rule takes every weight of at least
``WEIGHT_MIN_ELEMENTS``); the rest stay folded and prepacked as with ``fast``:

    python benchmarks/memory/with_low_threshold.py N SCRIPT [ARGS ...]

Used to ask whether the time ``low`` costs comes from the many small weights (it does not:
``README.md``, "Which weights").
"""

import runpy
import sys

from silo_rt.runtime import ort_backend

if __name__ == "__main__":
    ort_backend.with_weights_as_inputs.__defaults__ = (int(sys.argv[1]),)
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
