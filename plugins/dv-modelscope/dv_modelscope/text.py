"""The CLIP tokenizer, rebuilt offline from the BPE table that ships inside open_clip.

ModelScopeT2V's tokenizer is OpenAI's CLIP BPE (49,408 entries, 77 positions). open_clip
carries the same merge table (`bpe_simple_vocab_16e6.txt.gz`), and the vocabulary is derived
from it by a fixed recipe, so `--random-weights` gets the real token ids without a download.
"""

from __future__ import annotations

import gzip
import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

# OpenAI's recipe: 256 byte symbols, the same with an end-of-word mark, then one entry per
# merge, then the two special tokens; the first line of the file is a header.
_MERGES = 49152 - 256 - 2


@lru_cache(maxsize=1)
def _bpe_table() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import pre_tokenizers

    path = _open_clip_folder() / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1 : _MERGES + 1]
    merges = [(a, b) for a, b in (line.split() for line in lines)]
    # GPT-2's bytes_to_unicode lists printable bytes as themselves, then the rest as 256+n:
    # in code-point order, which is how CLIP numbers them ("!" is 0).
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    words = [*symbols, *(s + "</w>" for s in symbols), *("".join(m) for m in merges)]
    words += ["<|startoftext|>", "<|endoftext|>"]
    return {w: i for i, w in enumerate(words)}, merges


def _open_clip_folder() -> Path:
    # Found without importing open_clip, which costs seconds (it pulls in timm).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("open_clip is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def clip_tokenizer(max_length: int = 77) -> Any:
    """A transformers CLIPTokenizer with CLIP's own vocabulary, padding with `!` (id 0) as
    OpenCLIP and ModelScope do."""
    from transformers import CLIPTokenizer

    vocab, merges = _bpe_table()
    # transformers annotates merges as strings, but the tokenizers BPE it builds wants pairs.
    pairs: Any = list(merges)
    return CLIPTokenizer(vocab=dict(vocab), merges=pairs, pad_token="!", model_max_length=max_length)
