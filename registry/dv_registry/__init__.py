"""dv_registry: the content-addressed, crash-safe store of dv subject and motion adapters.

It never imports torch or numpy: weights are stored as safetensors bytes, checked by their
header, and never deserialised here. See `Registry` for the layout under `$DV_HOME`.
"""

from dv_registry.blobs import BlobStore
from dv_registry.change import HOME_ENV
from dv_registry.errors import LockTimeoutError, NewerSchemaError, NotFoundError, RegistryError
from dv_registry.maintenance import NameUsage, Problem, PrunedItem, PruneReport, Usage
from dv_registry.manifest import KINDS, SCHEMA_VERSION, FileEntry, Kind, Manifest
from dv_registry.media import JPEG, JSON, MEDIA_TYPES, PNG, SAFETENSORS
from dv_registry.refs import LATEST, Ref, parse_ref
from dv_registry.store import NewEntry, NewFile, Registry, default_home

__all__ = [
    "HOME_ENV",
    "JPEG",
    "JSON",
    "KINDS",
    "LATEST",
    "MEDIA_TYPES",
    "PNG",
    "SAFETENSORS",
    "SCHEMA_VERSION",
    "BlobStore",
    "FileEntry",
    "Kind",
    "LockTimeoutError",
    "Manifest",
    "NameUsage",
    "NewEntry",
    "NewFile",
    "NewerSchemaError",
    "NotFoundError",
    "Problem",
    "PruneReport",
    "PrunedItem",
    "Ref",
    "Registry",
    "RegistryError",
    "Usage",
    "default_home",
    "parse_ref",
]
