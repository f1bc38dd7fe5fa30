"""The toy backbone's training noise schedule and appearance width, in a module of its own so
that both the backbone's registration (no torch) and the model code read them without
importing each other.

Pixel-space data has large flat areas: DDPM's linear schedule ends at almost zero signal,
so sampling from pure noise matches what training saw at t = T. A model this small
predicts epsilon badly at high noise, and DDIM divides that error by the tiny signal level;
v-prediction (~ the image at high noise) keeps early steps stable."""

from dreamvideo_cli.objectives import NoiseSchedule

TOY_SCHEDULE = NoiseSchedule(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", prediction_type="v_prediction")

# The width of `model.ToyAppearanceEncoder`'s embedding (the backbone's `appearance_dim`).
APPEARANCE_DIM = 64
