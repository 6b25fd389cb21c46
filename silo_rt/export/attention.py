"""Attention written for export: ``softmax((q·scale) kᵀ) v`` with nothing else in the graph.

PyTorch's math SDPA guards fully masked rows with ``where(all(x == -inf), 0, softmax)`` and
diffusers' classic processor computes scores with ``baddbmm(empty, q, kᵀ, beta=0)``; traced
and differentiated, both add full-size elementwise passes over every attention map (a third
of ONNX Runtime's step time on ``small``). This processor is diffusers' ``AttnProcessor``
with the scores computed plainly; the result is the same attention.
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import AttnProcessor


def _plain_attention_scores(attn, query, key, attention_mask=None):
    scores = torch.bmm(query * attn.scale, key.transpose(-1, -2))
    if attention_mask is not None:
        scores = scores + attention_mask
    if attn.upcast_softmax:
        scores = scores.float()
    return scores.softmax(dim=-1).to(query.dtype)


class ExportAttnProcessor(AttnProcessor):
    """diffusers' ``AttnProcessor`` with :func:`_plain_attention_scores`."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        attn.get_attention_scores = types.MethodType(_plain_attention_scores, attn)
        try:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask,
                                    temb, *args, **kwargs)
        finally:
            del attn.get_attention_scores


@contextmanager
def export_attention(module: torch.nn.Module):
    """Use :class:`ExportAttnProcessor` in every diffusers model inside ``module`` meanwhile."""
    saved = []
    for sub in module.modules():
        if hasattr(sub, "set_attn_processor") and hasattr(sub, "attn_processors"):
            saved.append((sub, sub.attn_processors))
            sub.set_attn_processor(ExportAttnProcessor())
    try:
        yield
    finally:
        for sub, processors in saved:
            sub.set_attn_processor(processors)
