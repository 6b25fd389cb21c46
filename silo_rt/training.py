"""Training H_θ (Eq. 20) with HF Accelerate: ``L1(H_θ(·), E(A(x) + n))``.

* Data: an image folder (PNG/JPEG/…), augmented per the authors' code: RandomResizedCrop
  (scale 0.75–1), horizontal flip, slight colour jitter; images in [-1, 1].
* σ_y ~ U(σ_min, σ_max) per example, in the [-1, 1] range; y = A(x) + σ_y·n.
* Target: ``w = E(encoder_input(y))`` (posterior sample × scaling factor), clamped to ±4 for
  gb/sr exactly as at restoration time, so training and sampling see the same ``w``.
* CNN: input ``E(x)`` (clean latent), Adam. Readout: ``z_t = add_noise(E(x), ε, t)``,
  t ~ U{0..T−1}, one UNet call with the empty prompt gives the up-block features, AdamW.
* Resumable: ``accelerator.save_state`` every ``checkpoint_every`` steps into
  ``<out>.train-state/``; a loss log (JSON lines) at ``<out>.loss.jsonl``.

Runs single-process on CPU; ``accelerate launch -m silo_rt.cli train ...`` for multi-GPU.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .degradations import get_degradation
from .errors import SiloError, first_line
from .latents import MeasurementEncoder
from .operators import OperatorConfig, UpBlockFeatureTap, build_operator, save_operator
from .resize import DEFAULT_RESIZER, check_resizer

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class TrainOptions:
    """Training knobs (defaults: the authors' values)."""

    arch: str
    task: str
    data: Path
    out: Path
    steps: int = 1000
    batch_size: int = 16
    lr: float | None = None  # None: 1e-4 (cnn, Adam) / 2e-4 (readout, AdamW)
    image_size: int | None = None
    sigma_y_range: tuple[float, float] | None = None
    seed: int = 0
    checkpoint_every: int = 500
    resume: bool = False
    resizer: str = DEFAULT_RESIZER  # SR measurement model the operator learns to imitate

    def validate(self) -> None:
        """Refuse bad settings and unwritable outputs before anything is loaded or written."""
        from .images import check_outputs

        for name in ("steps", "batch_size", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SiloError(f"{name.replace('_', ' ')} must be an integer >= 1, got "
                                f"{value}")
        if self.lr is not None and not (math.isfinite(self.lr) and 0.0 < self.lr <= 1.0):
            raise SiloError(f"learning rate must be a finite number in (0, 1], got {self.lr}")
        if self.sigma_y_range is not None:
            lo, hi = self.sigma_y_range
            if not (math.isfinite(lo) and math.isfinite(hi) and 0.0 <= lo <= hi < 1.0):
                raise SiloError(f"sigma_y range must satisfy 0 <= min <= max < 1, got "
                                f"{tuple(self.sigma_y_range)}")
        if self.out.suffix != ".safetensors":
            raise SiloError(f"--out must end in .safetensors, got {self.out.name}")
        check_outputs([self.out, self.loss_log])
        if self.state_dir.exists() and not self.state_dir.is_dir():
            raise SiloError(f"{self.state_dir} exists and is not a folder")

    @property
    def state_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".train-state")

    @property
    def loss_log(self) -> Path:
        return self.out.with_name(self.out.name + ".loss.jsonl")


class ImageFolder(torch.utils.data.Dataset):
    """Images under a folder (recursively), as augmented ``(3, S, S)`` tensors in [-1, 1]."""

    def __init__(self, root: Path, image_size: int):
        import kornia.augmentation as K

        root = Path(root)
        if not root.is_dir():
            raise SiloError(f"training data folder not found: {root}")
        self.paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.paths:
            raise SiloError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
        self.image_size = image_size
        self.augment = K.AugmentationSequential(
            K.RandomResizedCrop((image_size, image_size), scale=(0.75, 1.0)),
            K.RandomHorizontalFlip(),
            K.ColorJitter(0.05, 0.05, 0.05, 0.01, p=0.5),
        )

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        import numpy as np
        from PIL import Image

        from .images import decode_rgb

        rgb = decode_rgb(self.paths[index], "training image")  # (H, W, 3) in [0, 255]
        short = min(rgb.shape[:2])
        if short < self.image_size:  # upscale small images so the crop fits
            im = Image.fromarray(rgb.round().astype(np.uint8))
            scale = self.image_size / short
            im = im.resize((round(im.width * scale), round(im.height * scale)), Image.BICUBIC)
            rgb = np.asarray(im, dtype=np.float32)
        x = torch.from_numpy(rgb.transpose(2, 0, 1) / 255.0)
        return (self.augment(x[None])[0] * 2 - 1).clamp(-1, 1)

    def check_headers(self) -> None:
        """Open every image's header (no decoding): refuse non-images and huge images before
        training writes anything."""
        from .images import check_header

        for path in self.paths:
            check_header(path, "training image")


def posterior_sample(vae, x, generator):
    """``(posterior of E(x), a sample of it)``, the noise drawn from ``generator``."""
    posterior = vae.encode(x).latent_dist
    eps = torch.randn(posterior.mean.shape, generator=generator, dtype=posterior.mean.dtype)
    return posterior, posterior.mean + posterior.std * eps


def encode_sample(prior, x, generator):
    """A latent ``E(x)`` of a clean image as the prior's UNet sees it: posterior sample ×
    scaling factor (no clamp)."""
    return posterior_sample(prior.vae, x, generator)[1] * prior.scaling_factor


def posterior_noise(prior, x, generator):
    """The ``(B, C, s, s)`` noise that picks a posterior sample of ``E(x)``."""
    shape = prior.latent_shape(x.shape[-1], x.shape[0])
    return torch.randn(shape, generator=generator, dtype=x.dtype)


class OperatorTrainer:
    """Computes Eq. 20's loss for a batch; the loop lives in :func:`train_operator`."""

    def __init__(self, prior, operator, config: OperatorConfig, generator: torch.Generator):
        self.prior = prior
        self.operator = operator
        self.config = config
        self.degradation = get_degradation(config.task, config.resizer)
        self.encoder = MeasurementEncoder(prior, config.task, config.image_size, config.resizer)
        self.generator = generator
        self.context = prior.encode_prompt("")

    @torch.no_grad()
    def make_target(self, x: torch.Tensor, sigma_y: torch.Tensor) -> torch.Tensor:
        y = self.degradation(x)
        y = y + sigma_y[:, None, None, None] * torch.randn(y.shape, generator=self.generator)
        return self.encoder(y, posterior_noise(self.prior, x, self.generator))

    @torch.no_grad()
    def make_inputs(self, x: torch.Tensor):
        """``(z0, temb, features)`` the operator sees for clean images ``x``."""
        z0 = encode_sample(self.prior, x, self.generator)
        if self.config.arch == "cnn":
            return z0, None, None
        sched = self.prior.scheduler
        t = torch.randint(0, sched.config.num_train_timesteps, (x.shape[0],),
                          generator=self.generator)
        z_t = sched.add_noise(z0, torch.randn(z0.shape, generator=self.generator), t)
        with UpBlockFeatureTap(self.prior.unet) as tap:
            self.prior.unet(z_t, t, encoder_hidden_states=self.context.expand(x.shape[0], -1, -1))
        return z_t, self.prior.timestep_embedding(t.float()), tap.features

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.config.sigma_y_range
        sigma_y = lo + (hi - lo) * torch.rand(x.shape[0], generator=self.generator)
        target = self.make_target(x, sigma_y)
        z0, temb, features = self.make_inputs(x)
        with torch.no_grad():
            sigma_emb = self.prior.sigma_embedding(sigma_y)
        prediction = self.operator(z0, sigma_emb, temb, features)
        return torch.nn.functional.l1_loss(prediction, target)


def load_training_state(accelerator, state_dir: Path) -> None:
    """``accelerator.load_state(state_dir)``; a damaged or foreign state is one line."""
    import pickle

    try:
        accelerator.load_state(str(state_dir))
    except (OSError, RuntimeError, ValueError, KeyError, EOFError,
            pickle.UnpicklingError) as exc:
        raise SiloError(f"cannot resume from {state_dir} (damaged, or saved by another "
                        f"configuration): {first_line(exc)}") from None


def _kept_log_lines(path: Path, last_step: int) -> str:
    """The log's lines up to ``last_step`` (none for a fresh run), as text."""
    if not path.exists() or last_step == 0:
        return ""
    from .records import json_lines

    kept = []
    for line, record in json_lines(path):
        step = None if record is None else record.get("step")
        if not line:
            continue
        if not isinstance(step, int) or isinstance(step, bool):
            raise SiloError(f"cannot resume: {path} has a malformed line {line[:60]!r}")
        if step <= last_step:
            kept.append(line + "\n")
    return "".join(kept)


class StagedLog:
    """The loss log, written to a hidden file and published onto ``path`` at each saved
    state and at the end, so a run that fails early leaves the previous log untouched."""

    def __init__(self, path: Path, last_step: int):
        self.path = path
        self.staged = path.with_name(f".{path.name}.{os.getpid()}.partial")
        kept = _kept_log_lines(path, last_step)  # may refuse: before any file is opened
        self.file = self.staged.open("w")
        self.file.write(kept)

    def write(self, entry: dict) -> None:
        self.file.write(json.dumps(entry) + "\n")

    def publish(self) -> None:
        """Make ``path`` hold everything written so far (atomically)."""
        self.file.flush()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.part")
        shutil.copyfile(self.staged, tmp)
        os.replace(tmp, self.path)

    def close(self, ok: bool) -> None:
        self.file.close()
        if ok:
            os.replace(self.staged, self.path)
        self.staged.unlink(missing_ok=True)


def optimisation_loop(accelerator, loader, optimizer, loss_fn, *, start: int, total: int,
                      loss_log: Path, checkpoint_every: int, save_state, desc: str,
                      progress: bool = True, after_step=None) -> int:
    """The loop every trainer here shares: steps ``start+1 … total`` over ``loader`` (epochs
    as needed), the loss of each step appended to ``loss_log`` (JSON lines; lines past
    ``start`` from an interrupted run are dropped first), ``save_state(step)`` every
    ``checkpoint_every`` steps and at the end, a progress bar with the mean of the last 100
    losses. ``loss_fn(batch)`` returns the scalar loss; ``after_step()`` runs after each
    optimiser step (e.g. an EMA update). Returns the last step.
    """
    from tqdm.auto import tqdm

    log = StagedLog(loss_log, start)  # reads the kept log first: a refusal has no bar
    bar = tqdm(total=total, initial=start, desc=desc,
               disable=not progress or not accelerator.is_main_process)
    step, recent = start, []
    try:
        while step < total:
            for x in loader:
                loss = loss_fn(x)
                optimizer.zero_grad()
                accelerator.backward(loss)
                optimizer.step()
                if after_step is not None:
                    after_step()
                step += 1
                value = float(loss.detach())
                recent = (recent + [value])[-100:]
                log.write({"step": step, "loss": value})
                bar.update(1)
                bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}")
                if step % checkpoint_every == 0 and step < total:
                    log.publish()  # the log never lags behind a saved state
                    save_state(step)
                if step >= total:
                    break
    except BaseException:
        bar.close()
        log.close(ok=False)
        raise
    bar.close()
    log.close(ok=True)
    save_state(step)
    return step


def train_operator(prior, options: TrainOptions, progress: bool = True) -> OperatorConfig:
    """Train an operator and write it to ``options.out`` (``.safetensors``)."""
    from accelerate import Accelerator

    options.validate()
    config = dataclasses.replace(
        OperatorConfig.for_prior(prior, options.arch, options.task, options.image_size,
                                 options.sigma_y_range), resizer=check_resizer(options.resizer))
    get_degradation(options.task).check_size(config.image_size)
    dataset = ImageFolder(options.data, config.image_size)
    dataset.check_headers()

    torch.manual_seed(options.seed)
    operator = build_operator(config).train()
    lr = options.lr or (1e-4 if options.arch == "cnn" else 2e-4)
    optimizer = (torch.optim.Adam if options.arch == "cnn" else torch.optim.AdamW)(
        operator.parameters(), lr=lr)
    loader = torch.utils.data.DataLoader(dataset, batch_size=options.batch_size, shuffle=True,
                                         drop_last=len(dataset) >= options.batch_size)
    accelerator = Accelerator()
    operator, optimizer, loader = accelerator.prepare(operator, optimizer, loader)
    prior.unet.to(accelerator.device)
    prior.vae.to(accelerator.device)

    start = 0
    if options.resume and options.state_dir.is_dir():
        from .records import read_json_object

        start = read_json_object(options.state_dir / "progress.json", "training state",
                                 {"step": int})["step"]
        load_training_state(accelerator, options.state_dir)
    elif options.resume:
        raise SiloError(f"nothing to resume: {options.state_dir} does not exist")
    generator = torch.Generator().manual_seed(options.seed + start)
    trainer = OperatorTrainer(prior, operator, config, generator)

    def save_state(step):
        accelerator.save_state(str(options.state_dir))
        (options.state_dir / "progress.json").write_text(json.dumps({"step": step}))

    step = optimisation_loop(accelerator, loader, optimizer, trainer.loss, start=start,
                             total=options.steps, loss_log=options.loss_log,
                             checkpoint_every=options.checkpoint_every, save_state=save_state,
                             desc=f"train {options.arch}/{options.task}", progress=progress)
    config.trained_steps = step
    if accelerator.is_main_process:
        save_operator(options.out, accelerator.unwrap_model(operator).eval(), config)
    return config
