"""The ``torch.compile`` peer: the reference :class:`~silo_rt.step.GuidedStep`, VJP included,
compiled by Inductor and called on exactly the eager backend's inputs.

Compilation happens on the first call, so it is timed apart (``compile_s``) from the steps.
Parity is the relative error of ``z_prev`` against one eager call on the same inputs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass
class CompiledStep:
    """A compiled guided step, ready to time.

    Attributes:
        call: ``call(*inputs) -> (z_prev (B, C, h, w), loss ())``, the compiled module.
        compile_s: seconds of the first call (Dynamo trace + Inductor codegen + one run).
        fullgraph: whether the step compiled as one graph (False: with graph breaks).
        rel_err: ``‖z_c − z_e‖ / ‖z_e‖`` of ``z_prev``, compiled vs eager, same inputs.
    """

    call: object
    compile_s: float
    fullgraph: bool
    rel_err: float


def _rel_err(a, b) -> float:
    import torch

    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


def compile_step(step, inputs: tuple, mode: str | None = None, sync=None) -> CompiledStep:
    """Compile ``step`` with Inductor and run it once on ``inputs`` (the eager step's).

    Tries ``fullgraph=True`` first; a step Dynamo cannot capture whole is compiled again with
    graph breaks allowed (``fullgraph=False``, recorded). Any other failure propagates, for
    the bench to record in one line.

    Args:
        step: a :class:`~silo_rt.step.GuidedStep` (its weights on the inputs' device).
        inputs: ``(z_t, timestep, coefficients, noise, w, eta, context, sigma_y)``.
        mode: ``torch.compile`` mode (``"reduce-overhead"``: CUDA graphs on GPUs).
        sync: called after each timed call (``torch.cuda.synchronize`` on GPUs).
    """
    import torch

    reference = step(*inputs)[0]
    for fullgraph in (True, False):
        torch._dynamo.reset()  # no cached graph of an earlier compile may be reused
        compiled = torch.compile(step, backend="inductor", mode=mode, fullgraph=fullgraph)
        start = time.perf_counter()
        try:
            out = compiled(*inputs)[0]
            if sync is not None:
                sync()
        except torch._dynamo.exc.Unsupported:
            if not fullgraph:
                raise
            continue  # a graph break: try again with breaks allowed
        compile_s = time.perf_counter() - start
        return CompiledStep(compiled, compile_s, fullgraph, _rel_err(out, reference))
    raise AssertionError("unreachable")


def compiled_restore(prior, task: str, y, options, call):
    """Algorithm 1 as :func:`silo_rt.sampler.restore`, with ``call`` as its guided step.

    ``y``: ``(1, 3, h, w)`` tensor in [-1, 1]; returns ``x̂`` ``(1, 3, H, W)`` in [-1, 1]. The
    encoder and decoder run eagerly (they are timed the same way for the eager backend).
    """
    import torch

    from ..noise import NoiseSource
    from ..sampler import decode_latent, encode_measurement, prepare_sampling, run_steps

    noise = NoiseSource(options.seed)
    w = encode_measurement(prior, task, y, noise)
    start = prepare_sampling(prior, options, tuple(w.shape), noise)
    eta = torch.tensor([options.resolved_eta])
    sigma_y = torch.tensor([options.sigma_y])

    def silo_step(z_t, timestep, coefficients, n):
        return call(z_t, timestep, coefficients, n, w, eta, start.context, sigma_y)

    z0 = run_steps(start.z, start.schedule, start.step_noise, silo_step)
    return decode_latent(prior, z0)
