"""Text encoding: prompts -> the denoiser's context [B, T, D], per family convention.

- CLIP (ModelScope, Zeroscope, the toy world): 77 ids padded with the end token, no mask;
  the context is the last hidden state of every position.
- T5 family (Wan, and CogVideoX, LTX-Video, HunyuanVideo's second encoder): ids padded to
  a fixed length with an attention mask used inside the encoder; positions after the
  prompt's real length are zero in the context (WanPipeline trims and pads with zeros).

Textual inversion goes through `add_placeholder_token` (dreamvideo_cli.adapters), which
works on both vocabularies.
"""

from __future__ import annotations

import html
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Tokens:
    """A tokenised batch: ids [B, T] and, where the encoder reads one, a 0/1 mask [B, T]."""

    ids: torch.Tensor
    mask: torch.Tensor | None = None

    def __getitem__(self, rows: slice) -> Tokens:
        return Tokens(self.ids[rows], None if self.mask is None else self.mask[rows])

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class TextEncoding(ABC):
    """A tokenizer and its frozen encoder."""

    def __init__(self, tokenizer: Any, model: Any, max_length: int, *, offload: bool = False) -> None:
        self.tokenizer = tokenizer
        self.model = model
        self.max_length = max_length
        # A very large encoder (UMT5-XXL, 5.7B parameters) is kept in CPU memory between
        # uses on a GPU: `release` moves it out, `encode` brings it back.
        self.offload = offload
        self.device: torch.device | None = None

    def prepare(self, prompt: str) -> str:
        return prompt

    @abstractmethod
    def tokenize(self, prompts: list[str], device: torch.device) -> Tokens: ...

    @abstractmethod
    def run(self, tokens: Tokens) -> torch.Tensor:
        """Tokens -> hidden states [B, T, D] (gradients flow when enabled)."""

    def overflow(self, prompt: str) -> list[int]:
        """The token ids of `prompt` that `tokenize` cuts off (the encoder reads at most
        `max_length`, the end token included): both CLIP and T5 keep the first
        max_length - 1 tokens and end with the end token."""
        ids: list[int] = self.tokenizer(self.prepare(prompt), add_special_tokens=True, truncation=False)["input_ids"]
        if len(ids) <= self.max_length:
            return []
        return ids[self.max_length - 1 : -1]

    def encode(self, tokens: Tokens) -> torch.Tensor:
        self.to_device()
        return self.run(tokens)

    def to_device(self) -> None:
        """An offloaded encoder on its compute device now (`encode` does it first). Call it
        before making an optimizer of parameters inside the encoder (textual inversion's
        embedding row): a restored optimizer state is placed where its parameters are."""
        if self.offload and self.device is not None:
            self.model.to(self.device)

    def release(self) -> None:
        """The frozen prompts are encoded: free the encoder's accelerator memory if asked to."""
        if self.offload and self.device is not None and self.device.type != "cpu":
            self.model.to("cpu")
            torch.cuda.empty_cache()


class CLIPTextEncoding(TextEncoding):
    def __init__(self, tokenizer: Any, model: Any, max_length: int | None = None, **kwargs: Any) -> None:
        super().__init__(tokenizer, model, max_length or int(tokenizer.model_max_length), **kwargs)

    def tokenize(self, prompts: list[str], device: torch.device) -> Tokens:
        ids = self.tokenizer(
            [self.prepare(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        return Tokens(ids.to(device))  # [B, T]

    def run(self, tokens: Tokens) -> torch.Tensor:
        hidden: torch.Tensor = self.model(tokens.ids)[0]
        return hidden


def clean_prompt(text: str) -> str:
    """What WanPipeline does to a prompt before tokenising: fix mojibake (ftfy, when it is
    installed), unescape HTML twice, collapse whitespace."""
    try:
        import ftfy

        text = ftfy.fix_text(text)
    except ImportError:
        pass
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class T5TextEncoding(TextEncoding):
    """A T5-family encoder with an attention mask; padded positions are zero in the output."""

    def prepare(self, prompt: str) -> str:
        return clean_prompt(prompt)

    def tokenize(self, prompts: list[str], device: torch.device) -> Tokens:
        batch = self.tokenizer(
            [self.prepare(p) for p in prompts],
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        return Tokens(batch.input_ids.to(device), batch.attention_mask.to(device))

    def run(self, tokens: Tokens) -> torch.Tensor:
        assert tokens.mask is not None
        hidden: torch.Tensor = self.model(tokens.ids, attention_mask=tokens.mask).last_hidden_state
        keep = tokens.mask.bool().unsqueeze(-1)  # [B, T, 1]
        return torch.where(keep, hidden, torch.zeros_like(hidden))
