"""TensorRT for silo-rt bundles, one concern per module (none imports torch; TensorRT and
cuda-python are imported only when a function needs them):

===============  ==========================================================================
api              which TensorRT is installed (``tensorrt`` or ``tensorrt_rtx``) and the calls
                 that differ between TensorRT 10, 11 and RTX
parser_rules     documented restrictions of TensorRT's ONNX parser, checked without TensorRT
fp32_tail        the fp16 step's FP32 tail: which nodes, and whether they stay float32
check            per-graph verdicts: static checks, then parse and build ahead of time (no GPU)
keys             where a plan may run (flavour, version, GPU, precision), build settings,
                 the checks before a plan is loaded
plan_store       where plans live (in the bundle, or the user cache) and the build lock
build            building and recording a bundle's plans for this machine
cuda_device      this process's GPU through cuda-python, and why it cannot be used
device_memory    checked cuda-python calls, device buffers, best-effort cleanup
engine           one loaded plan: engine, context, IO buffers, captured CUDA graphs
backend          :class:`~.backend.TrtGraphs`, the backend: engines on one stream, the step
                 loop replayed from CUDA graphs
compare          each engine against ONNX Runtime with polygraphy
                 (``python -m silo_rt.runtime.tensorrt.compare``)
===============  ==========================================================================

The graphs' tensor names come from :mod:`silo_rt.runtime.step_io`.
"""
