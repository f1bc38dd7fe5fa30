"""dv-modelscope: a first-party dv plugin, registered through the public hooks."""
