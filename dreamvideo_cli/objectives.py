"""Training objectives: how clean latents are noised, what the denoiser must predict, how
timesteps are drawn, and how a prediction becomes x0.

DDPM (ModelScopeT2V, Zeroscope, the toy world), with alpha-bar_t from the beta schedule:
    x_t = sqrt(a_t) x0 + sqrt(1 - a_t) e,   target e (epsilon) or v = sqrt(a_t) e - sqrt(1 - a_t) x0,
    t ~ U{0, ..., T-1}; the denoiser is given t.
Rectified flow (Wan 2.1 and most video transformers), with s in [0, 1]:
    x_s = (1 - s) x0 + s e,   target v = e - x0,   x0 = x_s - s v;
    s = shift u / (1 + (shift - 1) u) with u = sigmoid(n), n ~ N(0, 1) (logit-normal,
    shifted towards noise as Wan's samplers are); the denoiser is given 1000 s.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:
    import torch

# torch is imported inside the methods that run on tensors: a backbone states its
# `NoiseSchedule` when its class is defined, which happens when dv registers plugins, and
# registering must not import torch (`dv --help` stays instant).


@dataclass(frozen=True)
class NoiseSchedule:
    """A DDPM training noise schedule (`DDPMObjective` wraps it), in diffusers' terms."""

    num_train_timesteps: int = 1000
    beta_start: float = 0.00085
    beta_end: float = 0.012
    beta_schedule: str = "scaled_linear"
    prediction_type: str = "epsilon"

    def as_config(self) -> dict[str, Any]:
        return asdict(self)


class Objective(ABC):
    kind: ClassVar[Literal["ddpm", "flow"]]
    num_train_timesteps: int

    @abstractmethod
    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        """n training timesteps, in the objective's own units (DDPM: integer t; flow: s)."""

    @abstractmethod
    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """What the denoiser is given for training timesteps t."""

    @abstractmethod
    def predicted_x0(self, xt: torch.Tensor, prediction: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    import torch

    return values.to(like.device, torch.float32).view(-1, *([1] * (like.dim() - 1)))


@dataclass
class DDPMObjective(Objective):
    """DDPM with epsilon or v prediction; noising is diffusers' DDPMScheduler's own."""

    schedule: NoiseSchedule
    kind: ClassVar[Literal["ddpm", "flow"]] = "ddpm"
    _scheduler: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def num_train_timesteps(self) -> int:  # type: ignore[override]
        return self.schedule.num_train_timesteps

    @property
    def prediction_type(self) -> str:
        return self.schedule.prediction_type

    @property
    def scheduler(self) -> Any:
        if self._scheduler is None:
            from diffusers import DDPMScheduler

            self._scheduler = DDPMScheduler(**self.schedule.as_config())
        return self._scheduler

    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        import torch

        return torch.randint(0, self.num_train_timesteps, (n,), generator=generator, device=device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.scheduler.add_noise(x0, noise, t)
        return out

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if self.prediction_type == "v_prediction":
            out: torch.Tensor = self.scheduler.get_velocity(x0, noise, t)
            return out
        return noise

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def predicted_x0(self, xt: torch.Tensor, prediction: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = _per_sample(self.scheduler.alphas_cumprod.to(t.device)[t], xt)
        if self.prediction_type == "v_prediction":
            return a.sqrt() * xt - (1 - a).sqrt() * prediction
        return (xt - (1 - a).sqrt() * prediction) / a.sqrt()


@dataclass(frozen=True)
class FlowMatchObjective(Objective):
    """Rectified flow with velocity prediction (target e - x0), as Wan 2.1 was trained."""

    shift: float = 3.0  # also the samplers' flow shift (Wan 2.1 at 480p: 3.0)
    num_train_timesteps: int = 1000
    kind: ClassVar[Literal["ddpm", "flow"]] = "flow"

    def shifted(self, u: torch.Tensor) -> torch.Tensor:
        return self.shift * u / (1 + (self.shift - 1) * u)

    def sample_timesteps(self, n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
        import torch

        u = torch.sigmoid(torch.randn((n,), generator=generator, device=device))
        return self.shifted(u)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        s = _per_sample(t, x0)
        return (1 - s) * x0 + s * noise

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return noise - x0

    def model_timestep(self, t: torch.Tensor) -> torch.Tensor:
        return t * self.num_train_timesteps

    def predicted_x0(self, xt: torch.Tensor, prediction: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return xt - _per_sample(t, xt) * prediction
