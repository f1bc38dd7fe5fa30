"""The optimizer of dv's training stages: AdamW with a linear warm-up then a constant rate
(the authors' recipe), whose state is saved as tensors plus JSON (safetensors, never a
pickle) and restored for `--resume`."""

from __future__ import annotations

from typing import Any

import torch


def warmup_then_constant(optimizer: torch.optim.Optimizer, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / max(1, warmup_steps)))


class AdamWWithWarmup:
    """AdamW with a linear warm-up then a constant rate (the authors' recipe), whose state
    can be saved as tensors plus JSON and restored for `--resume`."""

    def __init__(self, params: Any, lr: float, weight_decay: float, warmup_steps: int) -> None:
        self.optimizer = torch.optim.AdamW(list(params), lr=lr, weight_decay=weight_decay)
        self.schedule = warmup_then_constant(self.optimizer, warmup_steps)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def update(self) -> None:
        """One step on the gradients the last backward left, then the schedule's."""
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        return optimizer_state(self.optimizer, "optim")

    def restore(self, tensors: dict[str, torch.Tensor], scalars: dict[str, Any], step: int) -> None:
        restore_optimizer(self.optimizer, "optim", tensors, scalars)
        self.schedule.last_epoch = step


def optimizer_state(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer's state as flat tensors plus JSON, so it can be stored as safetensors."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {"param_groups": state["param_groups"], "state": {}}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{prefix}.{idx}.{key}"] = value
            else:
                scalars["state"].setdefault(str(idx), {})[key] = float(value)
    return tensors, scalars


def restore_optimizer(
    optimizer: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], scalars: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in scalars["state"].items():
        for name, value in values.items():
            state.setdefault(int(idx), {})[name] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": scalars["param_groups"]})
