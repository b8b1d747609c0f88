"""open_clip's CLIP tokenizer, on the `tokenizers` library (no torch, no network).

    tok = ClipTokenizer()
    ids = tok(["a photo of a cat."])      # (n, 77) int32, equal to open_clip.get_tokenizer(...)

The vocabulary is open_clip's own `bpe_simple_vocab_16e6.txt.gz` (the CLIP BPE merges), shipped
in `diffcut_jax/assets/`: open_clip builds its ConvNeXt models' tokenizer from that file, not from
the hub repository, so we do too. Text is cleaned as open_clip does (ftfy, HTML unescaped twice,
whitespace collapsed, lower case), split with CLIP's pattern, byte-level BPE encoded, wrapped in
start/end tokens and padded with 0 to the context length; a longer text is cut so that its last
token is the end token.
"""
from __future__ import annotations

import functools
import gzip
import html
from importlib import resources
from typing import Sequence

import numpy as np

CONTEXT_LENGTH = 77
SOT, EOT = "<start_of_text>", "<end_of_text>"
# CLIP's pre-tokenizer pattern (open_clip's, applied to lower-cased text).
_SPLIT = r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_NUM_MERGES = 49152 - 256 - 2


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (the BPE's base alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clean(text: str) -> str:
    """open_clip's cleaning: ftfy, HTML unescaped twice, whitespace collapsed, lower case."""
    import ftfy

    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


@functools.lru_cache(maxsize=1)
def _backend():
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    raw = resources.files("diffcut_jax").joinpath("assets", "bpe_simple_vocab_16e6.txt.gz").read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")[1 : _NUM_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    alphabet = list(_bytes_to_unicode().values())
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [SOT, EOT]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=merges,
                               end_of_word_suffix="</w>", continuing_subword_prefix="",
                               fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.add_special_tokens([SOT, EOT])  # typed in a text, they are the special tokens
    return tok


class ClipTokenizer:
    """Texts -> (n, context_length) int32 token ids, as open_clip's `SimpleTokenizer`."""

    def __init__(self, context_length: int = CONTEXT_LENGTH):
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2, got {context_length}")
        self.context_length = context_length
        self._tok = _backend()
        self.sot_id = self._tok.token_to_id(SOT)
        self.eot_id = self._tok.token_to_id(EOT)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """One text -> its BPE ids, without start/end tokens and not truncated."""
        if not isinstance(text, str):
            raise TypeError(f"texts must be str, got {type(text).__name__}: {text!r}")
        return self._tok.encode(clean(text), add_special_tokens=False).ids

    def __call__(self, texts: str | Sequence[str]) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.zeros((len(texts), self.context_length), np.int32)
        for i, text in enumerate(texts):
            ids = [self.sot_id] + self.encode(text) + [self.eot_id]
            if len(ids) > self.context_length:
                ids = ids[: self.context_length]
                ids[-1] = self.eot_id
            out[i, : len(ids)] = ids
        return out
