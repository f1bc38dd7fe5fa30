"""What a plan asks for and what it finds, as plain data (no torch): the request, the settings
it tries, and per stage and phase the peak GPU and host memory split by what holds it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "STAGE_NAMES",
    "GiB",
    "PhasePlan",
    "PlanRequest",
    "Settings",
    "Split",
    "StageName",
    "StagePlan",
    "Transfer",
]

GiB = 2**30
StageName = Literal["subject", "motion", "compose"]
STAGE_NAMES: tuple[StageName, ...] = ("subject", "motion", "compose")


@dataclass(frozen=True)
class Settings:
    """The memory settings of a run, each an option of the learn and compose commands."""

    gradient_checkpointing: bool = False
    fp8: bool = False
    blocks_to_swap: int = 0
    offload_activations: bool = False

    def flags(self, stage: StageName) -> list[str]:
        """The command-line options for these settings (compose trains nothing: no
        checkpointing or activation offload there)."""
        trains = stage != "compose"
        flags = ["--gradient-checkpointing"] if self.gradient_checkpointing and trains else []
        flags += ["--fp8"] if self.fp8 else []
        flags += ["--offload-activations"] if self.offload_activations and trains else []
        flags += [f"--blocks-to-swap {self.blocks_to_swap}"] if self.blocks_to_swap else []
        return flags

    def describe(self, stage: StageName) -> str:
        return " ".join(self.flags(stage)) or "default settings"

    def as_dict(self) -> dict[str, Any]:
        return {
            "gradient_checkpointing": self.gradient_checkpointing,
            "fp8": self.fp8,
            "blocks_to_swap": self.blocks_to_swap,
            "offload_activations": self.offload_activations,
        }


@dataclass(frozen=True)
class PlanRequest:
    """One stage of one run to plan. `frames` and `batch_size` None: the command's defaults
    (the backbone's frames; subject batch 4, motion batch 1). `batch_size` is per process,
    as on the learn commands."""

    stage: StageName
    backbone: str
    frames: int | None = None
    batch_size: int | None = None
    processes: int = 1
    shard: bool = False
    settings: Settings = field(default_factory=Settings)
    # The device the run computes on: a CUDA GPU, or a CPU (fp32, no autocast; what the
    # tests compare with torch's profiler).
    device: Literal["cuda", "cpu"] = "cuda"


@dataclass(frozen=True)
class Split:
    """Bytes on one device at its peak: frozen weights, trainable state (adapters, their
    gradients, AdamW's state), activations and temporaries, and data kept for the run
    (cached latents and text embeddings; fixed costs)."""

    weights: int = 0
    trainable: int = 0
    activations: int = 0
    cache: int = 0
    peak: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "weights": self.weights,
            "trainable": self.trainable,
            "activations": self.activations,
            "cache": self.cache,
            "peak": self.peak,
        }


@dataclass(frozen=True)
class Transfer:
    """Per training step (or per sampling step): bytes copied between host and GPU, and the
    step's floating-point operations."""

    host_to_gpu: int = 0
    gpu_to_host: int = 0
    flops: float = 0.0

    @property
    def moved(self) -> int:
        return self.host_to_gpu + self.gpu_to_host


@dataclass(frozen=True)
class PhasePlan:
    """The peaks of one phase of a stage (loading, encoding, a training step, sampling,
    decoding) and where the GPU's was reached."""

    name: str
    gpu: Split
    host: Split
    where: str = ""  # e.g. "backward at aten.mm.default (MmBackward0)"
    gpu_start: int = 0  # bytes live on the GPU when the phase began
    transfer: Transfer | None = None  # training and sampling phases

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "gpu": self.gpu.as_dict(), "host": self.host.as_dict()}
        out["where"] = self.where
        if self.transfer is not None:
            out["per_step"] = {
                "host_to_gpu": self.transfer.host_to_gpu,
                "gpu_to_host": self.transfer.gpu_to_host,
                "flops": self.transfer.flops,
            }
        return out


@dataclass(frozen=True)
class StagePlan:
    """A stage's phases as planned for one process, with what was asked."""

    request: PlanRequest
    frames: int
    batch_size: int
    height: int
    width: int
    phases: tuple[PhasePlan, ...]
    seconds: float  # wall time of the plan itself
    units: int = 0  # blocks of the denoiser (what --blocks-to-swap counts)
    unit_bytes: int = 0  # frozen bytes of one block, on average (after --fp8 when asked)

    @property
    def gpu_peak(self) -> int:
        return max((p.gpu.peak for p in self.phases), default=0)

    @property
    def host_peak(self) -> int:
        return max((p.host.peak for p in self.phases), default=0)

    def peak_phase(self) -> PhasePlan:
        return max(self.phases, key=lambda p: p.gpu.peak)

    def training(self) -> list[PhasePlan]:
        """The phases that repeat every step (training or sampling)."""
        return [p for p in self.phases if p.transfer is not None]

    def as_dict(self) -> dict[str, Any]:
        r = self.request
        return {
            "stage": r.stage,
            "backbone": r.backbone,
            "frames": self.frames,
            "batch_size": self.batch_size,
            "height": self.height,
            "width": self.width,
            "processes": r.processes,
            "shard": r.shard,
            "settings": r.settings.as_dict(),
            "gpu_peak": self.gpu_peak,
            "host_peak": self.host_peak,
            "phases": [p.as_dict() for p in self.phases],
            "blocks": self.units,
            "seconds": round(self.seconds, 2),
        }
