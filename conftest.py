"""Test-wide settings, loaded before any test module imports torch.

- No network: the Hugging Face libraries stay offline.
- One thread per process: with two cores shared by pytest and the subprocesses some
  tests start, PyTorch's default of one thread per core makes threads wait on each other
  (tiny models gain nothing from threads; docs/toyworld.md has the measurements).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["HF_HUB_OFFLINE"] = "1"
