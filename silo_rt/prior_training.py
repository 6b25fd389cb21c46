"""Training a small latent diffusion prior from scratch: the VAE, then the UNet.

Used for the embedded demo (``silo-rt train-prior``); works for any architecture that
:func:`silo_rt.prior.build_random_prior` builds. The output is a diffusers folder that
:func:`silo_rt.prior.load_prior` reads (``vae/``, ``unet/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``) plus ``training.json`` (what was trained, how long, the
last losses).

* ``vae``: ``AutoencoderKL`` with an L1 loss on pixels and on pixel differences (edges),
  plus a small KL term; afterwards the latent scaling factor is set to 1 / std of the
  training latents (how SD's 0.18215 was chosen).
* ``decoder`` (optional, after ``vae``): fine-tunes the decoder alone, encoder frozen, so
  the latent space stays as it is (usable after the UNet and operators are trained).
* ``unet``: ε-prediction MSE on DDPM-noised latents ``E(x)·scaling`` with the empty-prompt
  text context (the demo prior is unconditional), AdamW, and an EMA of the weights (with
  warm-up) that is what gets saved.

The text encoder stays at its random initialisation: only the empty prompt is ever used.
Both parts are resumable: ``accelerator.save_state`` (weights as safetensors, the rest loaded
with ``weights_only``) plus the EMA as safetensors into ``<folder>/.train-state-<part>/`` every
``checkpoint_every`` steps; the loss per step goes to ``<folder>/<part>.loss.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import SiloError
from .training import (
    ImageFolder,
    encode_sample,
    load_training_state,
    optimisation_loop,
    posterior_sample,
)

PARTS = ("vae", "unet", "decoder")


@dataclass
class PriorTrainOptions:
    """Knobs of one ``train-prior`` run."""

    part: str
    data: Path
    out: Path
    steps: int
    batch_size: int = 32
    lr: float = 3e-4
    architecture: str = "demo"
    seed: int = 0
    checkpoint_every: int = 500
    resume: bool = False
    kl_weight: float = 1e-4
    ema_decay: float = 0.999

    @property
    def state_dir(self) -> Path:
        return self.out / f".train-state-{self.part}"

    @property
    def loss_log(self) -> Path:
        return self.out / f"{self.part}.loss.jsonl"


def _start_prior(options: PriorTrainOptions):
    """The prior to train: the folder's if it exists, else a new one of the architecture."""
    from .prior import build_random_prior, load_prior

    if (options.out / "vae").is_dir():
        return load_prior(str(options.out))
    if options.part != "vae":
        raise SiloError(f"train the VAE first: {options.out} has no vae/ "
                        "(silo-rt train-prior vae ...)")
    prior = build_random_prior(options.architecture)
    prior.name = str(options.out)
    return prior


def _finite_difference_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 distance between the horizontal and vertical pixel differences of a and b."""
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean() + dy.abs().mean()


class VaeObjective:
    """``L1(x̂, x) + L1(∇x̂, ∇x) + kl_weight · KL`` (KL per latent element)."""

    def __init__(self, vae, kl_weight: float, generator: torch.Generator):
        self.vae, self.kl_weight, self.generator = vae, kl_weight, generator

    def model(self):
        return self.vae

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        posterior, z = posterior_sample(self.vae, x, self.generator)
        x_hat = self.vae.decode(z).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return ((x_hat - x).abs().mean() + _finite_difference_l1(x_hat, x)
                + self.kl_weight * kl)


class DecoderObjective:
    """Decoder fine-tuning with the encoder frozen: ``L1(D(z), x) + L1(∇D(z), ∇x)``.

    The latent space (and so the UNet and every operator) is unchanged; only reconstructions
    get sharper (SD's "ft-MSE" decoder did the same).
    """

    def __init__(self, vae, generator: torch.Generator):
        self.vae, self.generator = vae, generator

    def model(self):
        return self.vae.decoder

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.vae.post_quant_conv(posterior_sample(self.vae, x, self.generator)[1])
        x_hat = self.vae.decoder(z)
        return (x_hat - x).abs().mean() + _finite_difference_l1(x_hat, x)


class UnetObjective:
    """ε-prediction MSE on ``z_t = add_noise(E(x)·s, ε, t)``, t ~ U{0..T−1}."""

    def __init__(self, prior, generator: torch.Generator):
        self.prior, self.generator = prior, generator
        self.context = prior.encode_prompt("")

    def model(self):
        return self.prior.unet

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z0 = encode_sample(self.prior, x, self.generator)
        scheduler = self.prior.scheduler
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x.shape[0],),
                          generator=self.generator)
        eps = torch.randn(z0.shape, generator=self.generator)
        z_t = scheduler.add_noise(z0, eps, t)
        context = self.context.expand(x.shape[0], -1, -1)
        return torch.nn.functional.mse_loss(
            self.prior.unet(z_t, t, encoder_hidden_states=context).sample, eps)


@torch.no_grad()
def latent_scaling_factor(vae, loader, batches: int = 8) -> float:
    """1 / std of posterior samples of ``batches`` training batches (SD's recipe)."""
    samples = []
    for i, x in enumerate(loader):
        if i == batches:
            break
        samples.append(vae.encode(x).latent_dist.sample().flatten())
    return float(1.0 / torch.cat(samples).std())


def _save_ema(ema, state_dir: Path) -> int:
    """The EMA weights as safetensors (resuming never unpickles); returns its step count."""
    from safetensors.torch import save_file

    save_file({f"shadow.{i}": p.detach().contiguous() for i, p in
               enumerate(ema.shadow_params)}, str(state_dir / "ema.safetensors"))
    return int(ema.optimization_step)


def _load_ema(ema, state_dir: Path, record: dict) -> None:
    from safetensors.torch import load_file

    path = state_dir / "ema.safetensors"
    step = record.get("ema_optimization_step")
    if not path.is_file() or not isinstance(step, int) or isinstance(step, bool):
        raise SiloError(f"cannot resume: {path} (the UNet's EMA weights) is missing")
    try:
        tensors = load_file(str(path))
    except Exception as exc:  # safetensors raises its own error type for a damaged file
        raise SiloError(f"cannot resume: {path} is damaged ({exc})") from None
    if sorted(tensors) != sorted(f"shadow.{i}" for i in range(len(ema.shadow_params))):
        raise SiloError(f"cannot resume: {path} does not match this UNet")
    ema.shadow_params = [tensors[f"shadow.{i}"] for i in range(len(tensors))]
    ema.optimization_step = step


def _mean_logged_loss(log: Path, last: int = 100) -> float | None:
    """Mean of the last ``last`` losses in a JSON-lines loss log (None if empty)."""
    from .records import json_lines

    losses = [record["loss"] for _, record in json_lines(log)
              if record is not None and isinstance(record.get("loss"), int | float)
              and not isinstance(record.get("loss"), bool)][-last:]
    return sum(losses) / len(losses) if losses else None


def _single_threaded(worker_id: int) -> None:
    torch.set_num_threads(1)


def train_prior(options: PriorTrainOptions, progress: bool = True) -> dict:
    """Train one part of the prior in ``options.out``; returns the ``training.json`` entry."""
    from accelerate import Accelerator
    from diffusers.training_utils import EMAModel

    if options.part not in PARTS:
        raise SiloError(f"unknown part {options.part!r}; choose from {', '.join(PARTS)}")
    if options.out.exists() and not options.out.is_dir():
        raise SiloError(f"--out must be a folder: {options.out}")
    prior = _start_prior(options)
    dataset = ImageFolder(options.data, prior.default_image_size)
    torch.manual_seed(options.seed)
    generator = torch.Generator()
    objective = {"vae": lambda: VaeObjective(prior.vae, options.kl_weight, generator),
                 "decoder": lambda: DecoderObjective(prior.vae, generator),
                 "unet": lambda: UnetObjective(prior, generator)}[options.part]()
    model = objective.model().train().requires_grad_(True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=0.0)
    # One worker decodes and augments the next batch while the model trains on this one.
    loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size, shuffle=True,
                                         drop_last=len(dataset) >= options.batch_size,
                                         num_workers=1, persistent_workers=True,
                                         worker_init_fn=_single_threaded)
    accelerator = Accelerator()
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    ema = None
    if options.part == "unet":
        ema = EMAModel(model.parameters(), decay=options.ema_decay, use_ema_warmup=True)

    start = 0
    if options.resume and options.state_dir.is_dir():
        from .records import read_json_object

        progress_record = read_json_object(options.state_dir / "progress.json",
                                           "training state", {"step": int})
        load_training_state(accelerator, options.state_dir)
        start = progress_record["step"]
        if ema is not None:
            _load_ema(ema, options.state_dir, progress_record)
    elif options.resume:
        raise SiloError(f"nothing to resume: {options.state_dir} does not exist")
    elif options.state_dir.exists():
        raise SiloError(f"{options.state_dir} exists: add --resume, or delete it to start over")
    generator.manual_seed(options.seed + start)

    def save_state(step):
        accelerator.save_state(str(options.state_dir))
        record = {"step": step}
        if ema is not None:
            record["ema_optimization_step"] = _save_ema(ema, options.state_dir)
        (options.state_dir / "progress.json").write_text(json.dumps(record))

    options.out.mkdir(parents=True, exist_ok=True)
    step = optimisation_loop(
        accelerator, loader, optimizer, objective.loss, start=start, total=options.steps,
        loss_log=options.loss_log, checkpoint_every=options.checkpoint_every,
        save_state=save_state, desc=f"train-prior {options.part}", progress=progress,
        after_step=None if ema is None else lambda: ema.step(model.parameters()))

    model = accelerator.unwrap_model(model).eval().requires_grad_(False)
    if ema is not None:
        ema.copy_to(model.parameters())
    entry = {"steps": step, "batch_size": options.batch_size, "lr": options.lr,
             "images": len(dataset), "mean_loss_last_100": _mean_logged_loss(options.loss_log)}
    if options.part == "vae":
        factor = latent_scaling_factor(model, loader)
        model.register_to_config(scaling_factor=factor)
        entry["scaling_factor"] = factor
        if not (options.out / "unet").is_dir():
            prior.save_pretrained(options.out)  # the untrained rest, so the folder loads
    elif options.part == "unet":
        entry["ema_decay"] = options.ema_decay
    if options.part == "decoder":
        prior.vae.eval().requires_grad_(False).save_pretrained(options.out / "vae")
    else:
        model.save_pretrained(options.out / options.part)
    record_path = options.out / "training.json"
    from .records import read_json_object

    record = read_json_object(record_path, "training record") if record_path.exists() else {}
    record[options.part] = entry
    if options.part == "vae" and "architecture" not in record:  # the part that built it
        record["architecture"] = options.architecture
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    return entry
