"""`dv plugins`, `dv backbones`, `dv samplers`, `dv metrics`: what is installed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from dreamvideo_cli.cli._help import GroupedCommand
from dreamvideo_cli.cli._output import out, print_json

if TYPE_CHECKING:
    from rich.table import Table

JSON = typer.Option(False, "--json", help="Print JSON on stdout.")


def install(app: typer.Typer) -> None:
    app.command("plugins", cls=GroupedCommand)(plugins)
    backbones_app = typer.Typer(
        help="List backbones, or inspect one with `dv backbones info NAME`.",
        invoke_without_command=True,
    )
    backbones_app.callback(invoke_without_command=True)(backbones)
    backbones_app.command("info", cls=GroupedCommand)(backbone_info)
    app.add_typer(backbones_app, name="backbones")
    app.command("samplers", cls=GroupedCommand)(samplers)
    app.command("metrics", cls=GroupedCommand)(metrics)


def _table(*columns: str) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column)
    return table


def plugins(json: bool = JSON) -> None:
    """List installed plugins, with the distribution and version each came from."""
    from dreamvideo_cli.plugins import list_plugins

    rows: list[dict[str, Any]] = [
        {"name": p.name, "distribution": p.distribution, "version": p.version, "hooks": list(p.hooks)}
        for p in list_plugins()
    ]
    if json:
        print_json(rows)
        return
    table = _table("plugin", "distribution", "version", "hooks")
    for r in rows:
        table.add_row(r["name"], r["distribution"], r["version"], ", ".join(r["hooks"]))
    out.print(table)


def backbones(ctx: typer.Context, json: bool = JSON) -> None:
    """List the registered backbones."""
    if ctx.invoked_subcommand is not None:
        return
    from dreamvideo_cli.plugins import get_backbones

    rows: list[dict[str, Any]] = []
    for name, reg in sorted(get_backbones().items()):
        cls = reg.item
        fmt = cls.video_format
        rows.append(
            {
                "name": name,
                "description": cls.description,
                "test_backbone": cls.is_test,
                "width": fmt.width,
                "height": fmt.height,
                "frames": fmt.frames,
                "fps": fmt.fps,
                "plugin": reg.plugin,
                "distribution": reg.distribution,
                "version": reg.version,
            }
        )
    if json:
        print_json(rows)
        return
    table = _table("backbone", "width x height", "frames@fps", "from", "description")
    for r in rows:
        desc = r["description"] + (" [test backbone]" if r["test_backbone"] else "")
        size = f"{r['width']}x{r['height']}"
        table.add_row(r["name"], size, f"{r['frames']}@{r['fps']}", r["distribution"], desc)
    out.print(table)


def backbone_info(
    name: str = typer.Argument(..., help="A backbone name from `dv backbones`."),
    json: bool = JSON,
) -> None:
    """Adapter sites, widths and parameter counts, computed without any weights."""
    from dreamvideo_cli.adapters import adapter_parameter_counts
    from dreamvideo_cli.plugins import get_backbone

    backbone = get_backbone(name)()
    denoiser = backbone.build_denoiser(device="meta")
    sites = backbone.adapter_sites(denoiser)
    design = type(backbone).adapter_design
    counts = adapter_parameter_counts(sites, type(backbone).appearance_dim, design)
    denoiser_parameters = sum(p.numel() for p in denoiser.parameters())
    frozen = _frozen_part_counts(name)

    def described(kind: str) -> list[dict[str, Any]]:
        return [
            {
                "path": s.path,
                "width": s.width,
                "slots": [{"sublayer": slot.sublayer, "reads_before": slot.norm} for slot in s.slots],
            }
            for s in sites
            if s.kind == kind
        ]

    experts = _experts(backbone, sites, design)
    data = {
        "name": name,
        "description": type(backbone).description,
        "family": backbone.family().name,
        "objective": backbone.training_objective().kind,
        "denoiser_parameters": denoiser_parameters,
        "unet_parameters": denoiser_parameters,  # the key's name before diffusion transformers
        **frozen,
        "identity_bottleneck": design.identity_bottleneck,  # None: d/2, as in the paper
        "motion_bottleneck": design.motion_bottleneck,
        "condition_in_bottleneck": design.condition_in_bottleneck,
        "identity_sites": described("identity"),
        "motion_sites": described("motion"),
        "parameters": counts,
        "experts": experts,
    }
    if json:
        print_json(data)
        return
    out.print(f"[bold]{name}[/bold]  {data['description']}")
    out.print(f"denoiser ({data['family']}, {data['objective']}) parameters: {data['denoiser_parameters']:,}")
    counted = [f"{part.removesuffix('_parameters').replace('_', ' ')} {n:,}" for part, n in frozen.items() if n]
    if counted:
        out.print(", ".join(counted) + " parameters")
    table = _table("adapter", "sites", "widths", "parameters")
    for kind in ("identity", "motion"):
        kind_sites = [s for s in sites if s.kind == kind]
        widths = sorted({s.width for s in kind_sites})
        table.add_row(kind, str(len(kind_sites)), ", ".join(map(str, widths)), f"{counts[kind]:,}")
    out.print(table)
    if experts:
        table = _table("expert", "timesteps", "default for", "identity sites", "motion sites", "parameters")
        for e in experts:
            table.add_row(
                e["name"], e["timesteps"], ", ".join(e["default_for"]) or "-",
                str(e["identity_sites"]), str(e["motion_sites"]), f"{e['parameters']['total']:,}",
            )  # fmt: skip
        out.print(table)


def _experts(backbone: Any, sites: list[Any], design: Any) -> list[dict[str, Any]]:
    """Per expert of a backbone of several: its timesteps, the adapter kinds it gets by
    default, its sites (by path prefix), their widths and parameter counts."""
    from dreamvideo_cli.adapters import adapter_parameter_counts
    from dreamvideo_cli.experts import chosen_experts, expert_sites

    out: list[dict[str, Any]] = []
    for expert in backbone.family().experts():
        own = expert_sites(sites, [expert])
        out.append(
            {
                "name": expert.name,
                "path": expert.path,
                "timesteps": expert.describe_range(),
                "start": expert.start,
                "end": expert.end,
                "default_for": [k for k in ("identity", "motion") if expert in chosen_experts(backbone, k, None)],
                "identity_sites": sum(s.kind == "identity" for s in own),
                "motion_sites": sum(s.kind == "motion" for s in own),
                "widths": sorted({s.width for s in own}),
                "parameters": adapter_parameter_counts(own, type(backbone).appearance_dim, design),
            }
        )
    return out


def _frozen_part_counts(name: str) -> dict[str, int | None]:
    """The VAE's, the text encoder's and the appearance encoder's parameter counts, from
    the parts built on the meta device (no weights, no download: the configs ship with dv);
    None for a backbone that cannot be built so."""
    import torch

    from dreamvideo_cli.errors import DVError
    from dreamvideo_cli.plugins import get_backbone
    from dreamvideo_cli.runtime import quiet_libraries

    quiet_libraries()
    try:
        parts = get_backbone(name)(random_weights=True).load("meta", torch.float32)
    except (NotImplementedError, DVError, OSError):  # a plugin's backbone that cannot be built without weights
        return dict.fromkeys(("vae_parameters", "text_encoder_parameters", "appearance_encoder_parameters"))

    def count(module: Any) -> int | None:
        return sum(p.numel() for p in module.parameters()) if module is not None else None

    return {
        "vae_parameters": count(getattr(parts.codec, "vae", None)),
        "text_encoder_parameters": count(parts.text_encoder),
        "appearance_encoder_parameters": count(parts.appearance_encoder),
    }


def samplers(json: bool = JSON) -> None:
    """List the registered samplers."""
    from dreamvideo_cli.plugins import get_samplers

    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "description": reg.item.description,
            "default_steps": reg.item.default_steps,
            "plugin": reg.plugin,
            "distribution": reg.distribution,
            "version": reg.version,
        }
        for name, reg in sorted(get_samplers().items())
    ]
    if json:
        print_json(rows)
        return
    table = _table("sampler", "steps", "from", "description")
    for r in rows:
        table.add_row(r["name"], str(r["default_steps"]), r["distribution"], r["description"])
    out.print(table)


def metrics(json: bool = JSON) -> None:
    """List the registered metrics."""
    from dreamvideo_cli.plugins import get_metrics

    rows: list[dict[str, Any]] = [
        {
            "name": name,
            "description": reg.item.description,
            "needs": sorted(reg.item.needs),
            "plugin": reg.plugin,
            "distribution": reg.distribution,
            "version": reg.version,
        }
        for name, reg in sorted(get_metrics().items())
    ]
    if json:
        print_json(rows)
        return
    table = _table("metric", "needs", "from", "description")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["needs"]), r["distribution"], r["description"])
    out.print(table)
