"""dv: customized video generation (DreamVideo)."""
__version__ = "0.1.0"
