"""One guided step of Algorithm 1 as a pure function of tensors.

This module is what both the reference sampler runs and the exporter traces, so the ONNX
step graph and the reference compute the same thing by construction; the parity tests check
that the *exported* graph does.

With ``c = coefficients`` (see :mod:`silo_rt.schedule`)::

    ε̂   = UNet(z_t, t, context)                     (CFG: ε_u + g·(ε_c − ε_u))
    ẑ0  = c[0]·z_t + c[1]·ε̂                          (Eq. 12)
    ŵ   = H_θ(ẑ0 | up-block features, t, σ_y)
    L   = Σ_b ‖w_b − ŵ_b‖₂                           (plain L2 norm per image, not squared)
    g   = ∂L/∂z_t                                    (through H_θ *and* the UNet)
    z_{t−1} = c[2]·ẑ0 + c[3]·z_t + c[4]·n − η·clamp(g, −1, 1)

For one image the loss is exactly the authors' ``torch.linalg.norm(w − ŵ)``; for a batch the
per-image sum keeps each image's gradient independent of the others.

Precision follows the weights: with a half-precision UNet and operator (the ``step_fp16``
graph of a bundle) the UNet and H_θ forward and their VJP run in fp16 between explicit
casts, placed so that every cast back to fp32 sits right on a convolution's output; the
inputs, ẑ0, the loss, the clamp, the η-update and the posterior mean stay fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from .operators.features import UpBlockFeatureTap


class GuidedStep(nn.Module):
    """Algorithm 1, lines 4-9, for a frozen prior and operator.

    Args:
        prior: a :class:`~silo_rt.prior.LatentPrior` (its UNet is used).
        operator: H_θ (``cnn`` or ``readout``), frozen; its ``uses_features`` says whether
            it reads the UNet's up-block features, ``uses_timestep`` whether it reads t.
        cfg_scale: classifier-free guidance scale; > 1 doubles the UNet batch and expects a
            ``(2B, L, D)`` context ordered [unconditional, prompt].
    """

    def __init__(self, prior, operator: nn.Module, cfg_scale: float = 1.0):
        super().__init__()
        self.unet = prior.unet
        self.operator = operator
        self.cfg_scale = float(cfg_scale)
        self._prior = prior
        self.compute_dtype = next(prior.unet.parameters()).dtype

    @property
    def uses_cfg(self) -> bool:
        return self.cfg_scale > 1.0

    def predict_noise(self, z_t, timestep, context, cfg_scale=None):
        """ε̂ ``(B, C, h, w)`` and, for the readout operator, the up-block features.

        With CFG the readout operator reads the features of the prompt-conditioned half;
        ``cfg_scale`` (a ``(1,)`` tensor) overrides the construction-time scale.
        """
        batch = z_t.shape[0]
        # Cast after the CFG duplication, so the gradient's sum over the two copies is fp32.
        sample = (torch.cat([z_t, z_t]) if self.uses_cfg else z_t).to(self.compute_dtype)
        context = context.to(self.compute_dtype)
        tap = UpBlockFeatureTap(self.unet) if self.operator.uses_features else None
        if tap is not None:
            with tap:
                eps = self.unet(sample, timestep, encoder_hidden_states=context).sample
            features = [f[-batch:] for f in tap.features]
        else:
            eps = self.unet(sample, timestep, encoder_hidden_states=context).sample
            features = None
        eps = eps.to(z_t.dtype)
        if self.uses_cfg:
            eps_uncond, eps_text = eps.chunk(2)
            scale = self.cfg_scale if cfg_scale is None else cfg_scale
            eps = eps_uncond + scale * (eps_text - eps_uncond)
        return eps, features

    def predict(self, z_t, timestep, coefficients, context, sigma_y, cfg_scale=None):
        """The forward half of a step: ``(ε̂, ẑ0, ŵ)``, each ``(B, C, h, w)``, with
        ``ŵ = H_θ(ẑ0 | up-block features, t, σ_y)`` in ẑ0's dtype."""
        eps, features = self.predict_noise(z_t, timestep, context, cfg_scale)
        z0 = coefficients[0] * z_t + coefficients[1] * eps
        sigma_emb = self._prior.sigma_embedding(sigma_y)
        temb = self._prior.timestep_embedding(timestep) if self.operator.uses_timestep else None
        w_hat = self.operator(z0, sigma_emb, temb, features).to(z0.dtype)
        return eps, z0, w_hat

    def measurement_loss(self, z_t, timestep, coefficients, w, context, sigma_y,
                         cfg_scale=None):
        """``(L, (ẑ0, L))``: the guidance loss and, as auxiliaries, ẑ0 and L itself (so a
        gradient transform returns the loss value too)."""
        _, z0, w_hat = self.predict(z_t, timestep, coefficients, context, sigma_y, cfg_scale)
        loss = torch.linalg.vector_norm((w - w_hat).flatten(1), dim=1).sum()
        return loss, (z0, loss)

    def forward(self, z_t, timestep, coefficients, noise, w, eta, context, sigma_y,
                cfg_scale=None):
        """One guided step.

        Args:
            z_t: ``(B, C, h, w)`` current latent.
            timestep: ``(1,)`` float32 UNet timestep.
            coefficients: ``(5,)`` float32 schedule coefficients of this step.
            noise: ``(B, C, h, w)`` posterior noise n.
            w: ``(B, C, h, w)`` encoded measurement.
            eta: ``(1,)`` consistency scale η.
            context: ``(B, L, D)`` text context, ``(2B, L, D)`` with CFG.
            sigma_y: ``(1,)`` measurement noise level ([-1, 1] range).
            cfg_scale: optional ``(1,)`` CFG scale overriding the construction-time one.

        Returns:
            ``(z_{t-1}, loss)``, shapes ``(B, C, h, w)`` and ``()``.
        """
        grad_fn = torch.func.grad(self.measurement_loss, argnums=0, has_aux=True)
        grad, (z0, loss) = grad_fn(z_t, timestep, coefficients, w, context, sigma_y, cfg_scale)
        z_prev = (coefficients[2] * z0 + coefficients[3] * z_t + coefficients[4] * noise
                  - eta * grad.clamp(-1.0, 1.0))
        return z_prev, loss
