"""Denoiser families: everything the engine must know about one kind of denoiser.

`unet3d` is diffusers' UNet3DConditionModel (ModelScopeT2V, Zeroscope, the toy world and
the tiny test backbone). Diffusion transformers live with their plugins (dv-wan).
"""
