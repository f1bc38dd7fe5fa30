"""dv-metrics: a first-party dv plugin, registered through the public hooks."""
