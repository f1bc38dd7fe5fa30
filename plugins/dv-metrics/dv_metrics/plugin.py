"""Hook implementations: the paper's four metrics, registered like any third party's.

Registering imports no torch or model code: the classes load their weights on first use.
"""

from typing import Any

from dreamvideo_cli.hookspecs import hookimpl


@hookimpl
def register_metrics(register: Any) -> None:
    from dv_metrics.metrics import METRICS

    for metric in METRICS:
        register(metric)
