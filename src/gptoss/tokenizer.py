"""The o200k_harmony tokenizer, built offline from the vocabulary shipped in this package.

``o200k_harmony`` = tiktoken's ``o200k_base`` BPE (ids 0..199997, its own pre-tokenisation
regex) plus the harmony special tokens (SPEC §3). The vocabulary file ships in
``gptoss/data``; its sha256 is verified before first use. tiktoken is pointed at it through
``TIKTOKEN_CACHE_DIR`` (a directory holding the file under the sha1 of its public URL) and
openai-harmony through ``TIKTOKEN_ENCODINGS_BASE``, so neither library ever downloads it.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import threading
from functools import cache
from pathlib import Path

import tiktoken

DATA_DIR = Path(__file__).parent / "data"
VOCAB_FILE = DATA_DIR / "o200k_base.tiktoken"
TIKTOKEN_CACHE = DATA_DIR / "tiktoken_cache"  # holds VOCAB_FILE under tiktoken's cache key
VOCAB_SHA256 = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d"

N_MERGEABLE = 199998
VOCAB_SIZE = 201088  # model rows; harmony names one more reserved id, never sampled
SPECIAL_TOKENS: dict[str, int] = {
    "<|startoftext|>": 199998,
    "<|endoftext|>": 199999,
    "<|return|>": 200002,
    "<|constrain|>": 200003,
    "<|channel|>": 200005,
    "<|start|>": 200006,
    "<|end|>": 200007,
    "<|message|>": 200008,
    "<|call|>": 200012,
}
for _i in range(200000, VOCAB_SIZE):
    if _i not in SPECIAL_TOKENS.values():
        SPECIAL_TOKENS[f"<|reserved_{_i}|>"] = _i
# Control tokens of the harmony grammar: never shown to a user as text.
CONTROL_TOKENS = ("<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>",
                  "<|call|>", "<|endoftext|>", "<|startoftext|>")


class VocabularyError(RuntimeError):
    """The shipped vocabulary file is missing or altered."""


_lock = threading.Lock()


@cache
def verify_vocab() -> Path:
    """Check the shipped vocabulary's sha256 once per process; return its path."""
    try:
        digest = hashlib.sha256(VOCAB_FILE.read_bytes()).hexdigest()
    except OSError as e:
        raise VocabularyError(f"tokenizer vocabulary {VOCAB_FILE} is unreadable ({e.strerror}); "
                              "reinstall gptoss") from None
    if digest != VOCAB_SHA256:
        raise VocabularyError(f"tokenizer vocabulary {VOCAB_FILE} has sha256 {digest}, expected "
                              f"{VOCAB_SHA256}; the file is corrupt: reinstall gptoss")
    return VOCAB_FILE


def configure_offline_env() -> None:
    """Point openai-harmony at the shipped vocabulary (it downloads it otherwise)."""
    verify_vocab()
    os.environ["TIKTOKEN_ENCODINGS_BASE"] = str(DATA_DIR)


@cache
def o200k_harmony() -> tiktoken.Encoding:
    """The tiktoken encoding, built from local files only."""
    verify_vocab()
    with _lock:
        saved = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = str(TIKTOKEN_CACHE)
        try:
            base = tiktoken.get_encoding("o200k_base")  # found in the cache, hash checked by tiktoken
        finally:
            if saved is None:
                os.environ.pop("TIKTOKEN_CACHE_DIR", None)
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = saved
    return tiktoken.Encoding(name="o200k_harmony", pat_str=base._pat_str,
                             mergeable_ranks=base._mergeable_ranks, special_tokens=SPECIAL_TOKENS)


class Tokenizer:
    """Text <-> ids. Text is always encoded as ordinary text: a typed "<|end|>" never becomes a
    control token (SPEC §3, pitfall 25)."""

    def __init__(self) -> None:
        self.enc = o200k_harmony()
        self.vocab_size = VOCAB_SIZE

    def encode(self, text: str) -> list[int]:
        return self.enc.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        return self.enc.decode(ids, errors="replace")

    def token_bytes(self, token: int) -> bytes:
        return self.enc.decode_single_token_bytes(token)

    @staticmethod
    def is_special(token: int) -> bool:
        return token >= N_MERGEABLE

    def special(self, name: str) -> int:
        return SPECIAL_TOKENS[name]


class IncrementalDecoder:
    """Token ids -> text deltas that never split a UTF-8 character across deltas."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token: int) -> str:
        return self._utf8.decode(self.tok.token_bytes(token))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


@cache
def get_tokenizer() -> Tokenizer:
    return Tokenizer()
