"""dv_registry: the content-addressed store of dv adapters (placeholder)."""


class RegistryError(Exception):
    exit_code = 1
