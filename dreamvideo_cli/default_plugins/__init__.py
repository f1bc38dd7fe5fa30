"""dv's own plugins, registered through the same entry points and hooks as any other."""
