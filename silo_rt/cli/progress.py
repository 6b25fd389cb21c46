"""Progress bars on stderr that an error closes before its one line is printed."""

from __future__ import annotations

import sys

_open_bars: list = []


def step_progress(total: int, desc: str):
    """A sampler callback ``(i, t, z, loss)`` drawing a step bar that closes itself at the end."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr)
    _open_bars.append(bar)

    def callback(i, t, z, loss):
        bar.update(1)
        if i % 10 == 0 or i == total - 1:
            bar.set_postfix(loss=f"{loss:.3f}")
        if i == total - 1:
            _open_bars.remove(bar)
            bar.close()

    return callback


def open_bar(total: int, desc: str, unit: str, initial: int = 0, disable: bool = False):
    """A tqdm bar on stderr that an error closes first; ``close()`` unregisters it."""
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
               disable=disable)
    _open_bars.append(bar)
    close = bar.close

    def close_once():
        if bar in _open_bars:
            _open_bars.remove(bar)
        close()

    bar.close = close_once
    return bar


def close_bars() -> None:
    """End every open bar's line (and stop it being redrawn) before an error is printed."""
    while _open_bars:
        _open_bars.pop().close()
