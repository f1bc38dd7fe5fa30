"""The cheapest settings that fit a GPU: plan the stage with each rung of a ladder of settings,
cheapest first, and stop at the first whose predicted GPU peak fits.

The ladder, in order of cost (each rung keeps the ones before it, and never drops a setting
the caller asked for):

    none -> --gradient-checkpointing -> --fp8 -> --offload-activations -> --blocks-to-swap N

Checkpointing costs a recomputation; fp8 storage costs accuracy (e4m3 with a scale per block
of 64 inputs; its error is measured by scripts/fp8_error.py, docs/benchmarks.md); activation
offload and block swap cost copies over PCIe. Compose trains nothing, so its ladder is none,
fp8, block swap. Block swap takes the smallest N that fits: the GPU peak falls by about one
unit's weights per unit swapped, so the plan before it and one plan with swapping give N,
which is then planned and, if it does not fit, raised until it does.

A rung is skipped when it cannot lower the phases that are over budget (`_LOWERS`): no lever
changes loading, and only fp8 changes encoding (when the denoiser stays on the GPU while
encoding); when no rung left can, the search stops and says what does not fit.

What it costs, as an estimate: the bytes a step copies between host and GPU over PCIe 4.0
x16 (about 25 GB/s) against the step's floating-point operations at half an H100's dense
bf16 peak (790 TFLOP/s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from dreamvideo_cli.plan.model import GiB, PhasePlan, PlanRequest, Settings, StagePlan
from dreamvideo_cli.plan.planner import plan_stage

__all__ = [
    "HEADROOM",
    "PCIE_BYTES_PER_SECOND",
    "STEP_FLOPS_PER_SECOND",
    "Attempt",
    "Fit",
    "Slowdown",
    "command_line",
    "fit",
    "slowdown",
]

# Kept free of the budget: the CUDA context (300-500 MiB) and the caching allocator's
# fragmentation, neither of which torch.cuda.max_memory_allocated (what is planned) counts;
# a twentieth of a budget smaller than 10 GiB (a test's).
HEADROOM = GiB // 2
PCIE_BYTES_PER_SECOND = 25e9  # PCIe 4.0 x16, what pinned copies reach in practice
STEP_FLOPS_PER_SECOND = 0.5 * 790e12  # half an H100's dense bf16 peak (docs/benchmarks.md)

# Which settings can lower a phase's GPU peak (phase name prefix -> settings fields).
_LOWERS: dict[str, frozenset[str]] = {
    "load": frozenset(),
    "encode": frozenset({"fp8"}),  # the denoiser's weights, when it stays on the GPU
    "place denoiser": frozenset({"fp8", "blocks_to_swap"}),
    "sampling": frozenset({"fp8", "blocks_to_swap"}),
    "decode": frozenset({"fp8", "blocks_to_swap"}),
}
_EVERYTHING = frozenset({"gradient_checkpointing", "fp8", "offload_activations", "blocks_to_swap"})


@dataclass(frozen=True)
class Attempt:
    settings: Settings
    gpu_peak: int
    fits: bool
    seconds: float


@dataclass(frozen=True)
class Slowdown:
    """An estimate of what the copies of one step cost against its compute."""

    phase: str
    moved: int  # bytes copied between host and GPU per step
    flops: float
    transfer_seconds: float
    compute_seconds: float

    @property
    def serial(self) -> float:
        """The step's time over its compute time when no copy overlaps compute."""
        return (self.compute_seconds + self.transfer_seconds) / self.compute_seconds if self.compute_seconds else 1.0

    @property
    def overlapped(self) -> float:
        """... when every copy overlaps compute (block swap fetches one block ahead)."""
        c, t = self.compute_seconds, self.transfer_seconds
        return max(c, t) / c if c else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "moved_per_step": self.moved,
            "flops_per_step": self.flops,
            "transfer_seconds": round(self.transfer_seconds, 4),
            "compute_seconds": round(self.compute_seconds, 4),
            "slowdown_serial": round(self.serial, 3),
            "slowdown_overlapped": round(self.overlapped, 3),
            "estimate": "bytes over PCIe 4.0 x16 at 25 GB/s against FLOPs at 50% of an H100's 790 bf16 TFLOP/s",
        }


@dataclass(frozen=True)
class Fit:
    """The search's answer: the settings that fit (None: nothing on the ladder does), the
    plan with them (or the last one tried), and every attempt."""

    budget: int
    headroom: int
    settings: Settings | None
    plan: StagePlan
    attempts: tuple[Attempt, ...]
    reason: str = ""  # why nothing fits

    @property
    def target(self) -> int:
        return self.budget - self.headroom

    def command(self) -> str | None:
        return None if self.settings is None else command_line(replace(self.plan.request, settings=self.settings))

    def slowdowns(self) -> list[Slowdown]:
        return slowdown(self.plan) if self.settings is not None else []

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "headroom": self.headroom,
            "fits": self.settings is not None,
            "settings": None if self.settings is None else self.settings.as_dict(),
            "command": self.command(),
            "gpu_peak": self.plan.gpu_peak,
            "host_needed": self.plan.host_peak,
            "slowdown": [s.as_dict() for s in self.slowdowns()],
            "reason": self.reason,
            "attempts": [
                {
                    "settings": a.settings.as_dict(),
                    "gpu_peak": a.gpu_peak,
                    "fits": a.fits,
                    "seconds": round(a.seconds, 2),
                }
                for a in self.attempts
            ],
        }


def slowdown(plan: StagePlan) -> list[Slowdown]:
    """Per training (or sampling) phase that copies anything: what its copies cost (estimate)."""
    out = []
    for phase in plan.training():
        t = phase.transfer
        if t is None or not t.moved:
            continue
        out.append(
            Slowdown(phase.name, t.moved, t.flops, t.moved / PCIE_BYTES_PER_SECOND, t.flops / STEP_FLOPS_PER_SECOND)
        )
    return out


def command_line(request: PlanRequest) -> str:
    """The command that runs `request` with its settings."""
    stage, settings = request.stage, request.settings
    if stage == "compose":
        words = ["dv", "compose", "SUBJECT", "MOTION", '"PROMPT"']
    else:
        launcher = ["torchrun", "--nproc-per-node", str(request.processes), "-m", "dreamvideo_cli"]
        words = launcher if request.processes > 1 else ["dv"]
        words += [stage, "learn", "PHOTOS" if stage == "subject" else "CLIPS", "--name", "NAME"]
        words += ["--backbone", request.backbone]
    if request.frames is not None:
        words += ["--frames", str(request.frames)]
    if request.batch_size is not None:
        words += ["--batch-size", str(request.batch_size)]
    if request.shard:
        words.append("--shard")
    words += [w for flag in settings.flags(stage) for w in flag.split()]
    return " ".join(words)


def _ladder(stage: str, floor: Settings, shard: bool = False) -> list[Settings]:
    """The rungs without block swap, each at least `floor`. A sharded run takes gradient
    checkpointing alone (`memory.levers.check_combination`)."""
    rungs = [Settings()]
    if stage != "compose":
        rungs.append(Settings(gradient_checkpointing=True))
    if stage != "compose" and not shard:
        rungs.append(Settings(gradient_checkpointing=True, fp8=True))
        rungs.append(Settings(gradient_checkpointing=True, fp8=True, offload_activations=True))
    if stage == "compose":
        rungs.append(Settings(fp8=True))
    out: list[Settings] = []
    for rung in rungs:
        merged = Settings(
            gradient_checkpointing=rung.gradient_checkpointing or floor.gradient_checkpointing,
            fp8=rung.fp8 or floor.fp8,
            blocks_to_swap=floor.blocks_to_swap,
            offload_activations=rung.offload_activations or floor.offload_activations,
        )
        if merged not in out:
            out.append(merged)
    return out


def _changed(a: Settings, b: Settings) -> frozenset[str]:
    fields = ("gradient_checkpointing", "fp8", "blocks_to_swap", "offload_activations")
    return frozenset(f for f in fields if getattr(a, f) != getattr(b, f))


def _lowered_by(phase: PhasePlan) -> frozenset[str]:
    for prefix, fields in _LOWERS.items():
        if phase.name.startswith(prefix):
            return fields
    return _EVERYTHING  # training steps: every setting


def _stuck(plan: StagePlan, target: int, remaining: frozenset[str]) -> PhasePlan | None:
    """A phase over `target` that none of the `remaining` settings can lower, if any."""
    for phase in plan.phases:
        if phase.gpu.peak > target and not (_lowered_by(phase) & remaining):
            return phase
    return None


def fit(
    request: PlanRequest,
    budget: int,
    *,
    headroom: int | None = None,
    planner: Callable[[PlanRequest], StagePlan] = plan_stage,
    on_attempt: Callable[[Attempt], None] | None = None,
) -> Fit:
    """The cheapest settings from the ladder whose predicted GPU peak is at most
    `budget - headroom` (default: `HEADROOM`, or a twentieth of a small budget), with
    `request.settings` as the least the caller wants."""
    if headroom is None:
        headroom = min(HEADROOM, budget // 20)
    target = budget - headroom
    attempts: list[Attempt] = []

    def attempt(settings: Settings) -> StagePlan:
        plan = planner(replace(request, settings=settings))
        done = Attempt(settings, plan.gpu_peak, plan.gpu_peak <= target, plan.seconds)
        attempts.append(done)
        if on_attempt is not None:
            on_attempt(done)
        return plan

    def failed(plan: StagePlan, reason: str) -> Fit:
        return Fit(budget, headroom, None, plan, tuple(attempts), reason)

    ladder = _ladder(request.stage, request.settings, request.shard)
    last = ladder[-1]
    plan: StagePlan | None = None
    for settings in ladder:
        remaining = _changed(settings, last) | {"blocks_to_swap"}
        if plan is not None:
            # Skip a rung that changes nothing the over-budget phases depend on.
            over = [p for p in plan.phases if p.gpu.peak > target]
            if over and not any(_lowered_by(p) & _changed(settings, plan.request.settings) for p in over):
                continue
        plan = attempt(settings)
        if plan.gpu_peak <= target:
            return Fit(budget, headroom, settings, plan, tuple(attempts))
        stuck = _stuck(plan, target, remaining)
        if stuck is not None:
            return failed(plan, _too_big(stuck, target))
    assert plan is not None
    if request.shard:
        return failed(plan, f"{_too_big(plan.peak_phase(), target)} with --shard (more processes hold less each)")
    return _swap_search(plan, last, target, attempt, failed, budget, headroom, attempts)


def _swap_search(
    plan: StagePlan,
    settings: Settings,
    target: int,
    attempt: Callable[[Settings], StagePlan],
    failed: Callable[[StagePlan, str], Fit],
    budget: int,
    headroom: int,
    attempts: list[Attempt],
) -> Fit:
    """The smallest number of swapped blocks that fits, from the plan without (or with the
    caller's) swapping: N from the excess over one unit's weights, planned, then corrected by
    the slope two plans give, until one fits and one fewer does not (as predicted by that
    slope: planning every N would take minutes for a 40-block model)."""
    units, unit_bytes = plan.units, plan.unit_bytes
    if not units or not unit_bytes:
        return failed(plan, "this denoiser has no blocks to swap")
    first = settings.blocks_to_swap
    n = min(units, first + max(1, -(-(plan.gpu_peak - target) // unit_bytes)) + 1)
    tried: dict[int, StagePlan] = {first: plan}
    while True:
        if n not in tried:
            tried[n] = attempt(replace(settings, blocks_to_swap=n))
        current = tried[n]
        if current.gpu_peak > target:
            stuck = _stuck(current, target, frozenset({"blocks_to_swap"}))
            if n >= units or stuck is not None:
                return failed(current, _too_big(stuck or current.peak_phase(), target, swapped=n))
            step = _slope(tried, n, unit_bytes)
            n = min(units, n + max(1, -(-(current.gpu_peak - target) // step)))
            continue
        # It fits: the smallest N the slope predicts to fit, if below n and not yet planned.
        step = _slope(tried, n, unit_bytes)
        smaller = n - (target - current.gpu_peak) // step
        smaller = max(smaller, first + 1 if first else 1)
        if smaller < n and smaller not in tried:
            n = smaller
            continue
        fits = [k for k, p in tried.items() if p.gpu_peak <= target and k > first]
        best = min(fits)
        return Fit(budget, headroom, replace(settings, blocks_to_swap=best), tried[best], tuple(attempts))


def _slope(tried: dict[int, StagePlan], n: int, fallback: int) -> int:
    """Bytes of GPU peak one more swapped block saves, from the plans nearest to n (with
    swapping: the first swapped block also brings the block in flight)."""
    others = sorted((k for k in tried if k != n and k > 0), key=lambda k: abs(k - n))
    if not others:
        return fallback
    k = others[0]
    return max(1, (tried[k].gpu_peak - tried[n].gpu_peak) // (n - k)) if k != n else fallback


def _too_big(phase: PhasePlan, target: int, swapped: int = 0) -> str:
    where = f" with {swapped} blocks swapped" if swapped else ""
    return (
        f"{phase.name} needs {phase.gpu.peak / GiB:.1f} GiB on the GPU{where} "
        f"({phase.gpu.weights / GiB:.1f} GiB of weights) and no setting left lowers it below {target / GiB:.1f} GiB"
    )
