"""``silo-rt bench``: latency of SILO's graphs and restorations, backends side by side in one
process, the decoder-in-the-loop baselines, and the arithmetic floor of the machine."""

from .config import BenchConfig
from .report import SCHEMA, render_markdown, render_table, write_plot
from .runner import run_bench

__all__ = ["SCHEMA", "BenchConfig", "run_bench", "render_table", "render_markdown",
           "write_plot"]
