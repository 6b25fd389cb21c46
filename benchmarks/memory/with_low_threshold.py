"""Run another benchmark script with ``--memory low`` holding as stored the float weights of
at least N elements, applied to at most R rows (``all``: any number; the runtime's rule is
``WEIGHT_MIN_ELEMENTS`` and ``WEIGHT_MAX_ROWS`` of ``silo_rt/runtime/low_memory.py``); the
rest stay folded and prepacked as with ``fast``:

    python benchmarks/memory/with_low_threshold.py N [--max-rows R|all] [--keep-flips]
        SCRIPT [ARGS ...]

``--keep-flips``: convolutions' input gradients keep reading a flipped, transposed copy of
their weight, derived each step (the rule before ``ConvTranspose``).
Used to ask where the time ``low`` costs comes from (``README.md``, "Which weights").
"""

import runpy
import sys

from silo_rt.runtime import low_memory

if __name__ == "__main__":
    args = sys.argv[1:]
    min_elements, max_rows = int(args.pop(0)), low_memory.WEIGHT_MAX_ROWS
    if args[0] == "--max-rows":
        args.pop(0)
        value = args.pop(0)
        max_rows = None if value == "all" else int(value)
    if args[0] == "--keep-flips":
        args.pop(0)
        low_memory.conv_gradients_as_transposed = lambda model, weights: 0
    low_memory.low_memory_model.__defaults__ = (min_elements, max_rows)
    sys.argv = args
    runpy.run_path(sys.argv[0], run_name="__main__")
