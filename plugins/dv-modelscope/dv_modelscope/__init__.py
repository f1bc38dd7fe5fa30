"""dv-modelscope: ModelScopeT2V (dv's default backbone) and Zeroscope, with the OpenCLIP
ViT-H-14 appearance encoder. A first-party plugin registered through the same public hooks a
third party would use; see docs/backbones.md."""

__all__ = ["DiffusersT2VBackbone", "ModelScopeBackbone", "ZeroscopeBackbone"]


def __getattr__(name: str) -> object:
    # Lazy, so `import dv_modelscope` stays as cheap as registering the plugin.
    if name in __all__:
        from dv_modelscope import backbones

        return getattr(backbones, name)
    raise AttributeError(f"module 'dv_modelscope' has no attribute {name!r}")
