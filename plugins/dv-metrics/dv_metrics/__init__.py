"""dv-metrics: CLIP-T, CLIP-I, DINO-I and temporal consistency (DreamVideo, Table 1).

A first-party dv plugin, registered through the public `register_metrics` hook
(entry point `metrics = "dv_metrics.plugin"`). `dv_metrics.metrics` holds the metric
classes, `dv_metrics.encoders` the encoders and the authors' preprocessing,
`dv_metrics.weights` where the weights come from.
"""
