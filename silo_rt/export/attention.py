"""Attention written for export: ``softmax((q·scale) kᵀ) v`` with nothing else in the graph.

PyTorch's math SDPA guards fully masked rows with ``where(all(x == -inf), 0, softmax)`` and
diffusers' classic processor computes scores with ``baddbmm(empty, q, kᵀ, beta=0)``; traced
and differentiated, both add full-size elementwise passes over every attention map (a third
of ONNX Runtime's step time on ``small``). :class:`ExportAttnProcessor` is diffusers'
``AttnProcessor`` with the scores computed plainly; the result is the same attention.

Two ways to differentiate it (:data:`ATTENTION_MODES`, ``silo-rt export --attention``):

* ``keep``: autograd's own backward, which keeps every ``(B·heads, N, N)`` probability map
  from the forward until the backward reads it (sd15 at 512 px: 0.5 GiB for each of the
  ten 64×64 attention maps of the step).
* ``recompute``: :class:`RecomputedAttention`, whose forward and backward run over chunks of
  ``chunk`` query rows and whose backward rebuilds each chunk's probabilities from Q and K,
  so only one chunk's maps are alive at a time. Standard ops only (MatMul, Softmax, Mul,
  Sub, ReduceSum).
"""

from __future__ import annotations

import types
from contextlib import contextmanager

import torch
from diffusers.models.attention_processor import AttnProcessor

ATTENTION_MODES = ("recompute", "keep")
DEFAULT_ATTENTION = "recompute"
DEFAULT_CHUNK = 512
"""Query rows per chunk of :class:`RecomputedAttention`. SD-1.x's 64×64 attention alone
(8 × 4096 × 40, ONNX Runtime, ``benchmarks/memory/attention-sweep-chained.json``): 512 rows
took 0.52 s and 0.38 GiB above the session, 1024 rows 0.56 s and 0.50 GiB, autograd's
backward 0.55 s and 2.1 GiB; 256 rows was 5 % faster but held more (0.45 GiB), doubles the
graph and slows the export. On the sd15-random step, 512 chained rows peaked 0.8 GiB lower
than 1024 unchained, and stepped 3 % faster (``benchmarks/memory/README.md``)."""


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


def _softmax(scores: torch.Tensor, upcast: bool) -> torch.Tensor:
    return (scores.float() if upcast else scores).softmax(dim=-1).to(scores.dtype)


def _cat(chunks: list[torch.Tensor]) -> torch.Tensor:
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


def _after(x: torch.Tensor, previous: torch.Tensor | None) -> torch.Tensor:
    """``x`` plus a zero-weighted element of ``previous``: the same values, computed after
    ``previous``. Nothing else orders independent chunks, and ONNX Runtime's execution
    order then kept many chunks' maps alive at once (SD-1.x's 64×64 attention: ~0.8 GiB at
    any chunk size, 0.38 GiB chained at 512 rows; ``benchmarks/memory``)."""
    return x if previous is None else x + previous[:, :1, :1] * 0


def _forward(query, key, value, chunk: int, upcast: bool):
    key_t = key.transpose(1, 2)
    outs = []
    for q in query.split(chunk, dim=1):
        q = _after(q, outs[-1] if outs else None)
        outs.append(torch.bmm(_softmax(torch.bmm(q, key_t), upcast), value))
    return _cat(outs)


def _backward(query, key, value, out, grad_out, chunk: int, upcast: bool):
    key_t, value_t = key.transpose(1, 2), value.transpose(1, 2)
    grad_q, grad_k, grad_v = [], [], []
    for q, d_out, o in zip(*(t.split(chunk, dim=1) for t in (query, grad_out, out))):
        # The zero-weighted term of dO makes the recomputation depend on this chunk's
        # incoming gradient: a scheduler cannot run it early (in the forward, keeping it
        # all along) and no common-subexpression pass can merge it with the forward's.
        anchor = d_out[:, :1, :1] * 0
        if grad_q:  # after all of the previous chunk's results (see _after)
            anchor = _after(anchor, sum(g[-1][:, :1, :1] for g in (grad_q, grad_k, grad_v)))
        probs = _softmax(torch.bmm(q + anchor, key_t), upcast)
        grad_v.append(torch.bmm(probs.transpose(1, 2), d_out))
        rows = (d_out * o).sum(dim=-1, keepdim=True)
        grad_s = probs * (torch.bmm(d_out, value_t) - rows)
        grad_q.append(torch.bmm(grad_s, key))
        grad_k.append(torch.bmm(grad_s.transpose(1, 2), q))
    return _cat(grad_q), sum(grad_k[1:], grad_k[0]), sum(grad_v[1:], grad_v[0])


class RecomputedAttention(torch.autograd.Function):
    """``softmax(q kᵀ) v`` for ``q (B, N, d)`` (already scaled), ``k, v (B, M, d)``, over
    chunks of ``chunk`` query rows, with a backward that recomputes each chunk's
    probabilities.

    With ``P = softmax(q_i kᵀ)`` and ``O_i = P v`` for chunk i, the backward is
    FlashAttention's: ``dv += Pᵀ dO_i``, ``dS = P ⊙ (dO_i vᵀ − rowsum(dO_i ⊙ O_i))``,
    ``dq_i = dS k``, ``dk += dSᵀ q_i``. ``setup_context`` makes it usable under
    ``torch.func.grad``; ``functionalize`` has no rule for it, so the step is traced first
    without, then functionalized (:func:`~.onnx_writer.trace_step`).
    """

    @staticmethod
    def forward(query, key, value, chunk: int, upcast: bool):
        return _forward(query, key, value, chunk, upcast)

    @staticmethod
    def setup_context(ctx, inputs, output):
        query, key, value, chunk, upcast = inputs
        ctx.save_for_backward(query, key, value, output)
        ctx.chunk, ctx.upcast = chunk, upcast

    @staticmethod
    def backward(ctx, grad_out):
        query, key, value, out = ctx.saved_tensors
        return (*_backward(query, key, value, out, grad_out, ctx.chunk, ctx.upcast),
                None, None)


class RecomputeAttnProcessor:
    """diffusers' ``AttnProcessor`` (self- and cross-attention of SD-1.x) with the attention
    itself computed by :class:`RecomputedAttention`; an attention mask falls back to
    :class:`ExportAttnProcessor` (no SD-1.x UNet passes one)."""

    def __init__(self, chunk: int = DEFAULT_CHUNK):
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1, got {chunk}")
        self.chunk = chunk

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs):
        if attention_mask is not None or attn.spatial_norm is not None \
                or attn.group_norm is not None:
            return ExportAttnProcessor()(attn, hidden_states, encoder_hidden_states,
                                         attention_mask, temb)
        residual = hidden_states
        four_d = hidden_states.ndim == 4
        if four_d:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states)) * attn.scale
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        hidden_states = RecomputedAttention.apply(query, key, value, self.chunk,
                                                  bool(attn.upcast_softmax))
        hidden_states = attn.to_out[1](attn.to_out[0](attn.batch_to_head_dim(hidden_states)))
        if four_d:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height,
                                                                    width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def attention_processor(mode: str = "keep", chunk: int = DEFAULT_CHUNK):
    """The processor of export attention ``mode`` (one of :data:`ATTENTION_MODES`)."""
    if mode == "keep":
        return ExportAttnProcessor()
    if mode == "recompute":
        return RecomputeAttnProcessor(chunk)
    raise ValueError(f"attention must be one of {', '.join(ATTENTION_MODES)}, got {mode!r}")


@contextmanager
def export_attention(module: torch.nn.Module, mode: str = "keep", chunk: int = DEFAULT_CHUNK):
    """Use the export processor of ``mode`` (:func:`attention_processor`) in every diffusers
    model inside ``module`` meanwhile."""
    processor = attention_processor(mode, chunk)
    saved = []
    for sub in module.modules():
        if hasattr(sub, "set_attn_processor") and hasattr(sub, "attn_processors"):
            saved.append((sub, sub.attn_processors))
            sub.set_attn_processor(processor)
    try:
        yield
    finally:
        for sub, processors in saved:
            sub.set_attn_processor(processors)
