"""dv-toyworld: a first-party dv plugin, registered through the public hooks."""
