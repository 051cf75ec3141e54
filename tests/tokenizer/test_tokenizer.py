"""The tokenizer is offline by construction: shipped vocabulary, verified, never downloaded."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gptoss import tokenizer as tk

SHARED_VOCAB = Path(__file__).resolve().parents[3] / "shared" / "vocab" / "o200k_base.tiktoken"

# Installed in a child process before anything else: every socket connection or name lookup
# to a non-loopback address raises, and each attempt is recorded in a file.
GUARD = textwrap.dedent("""
    import socket, sys
    LOG = sys.argv.pop(1)
    def _blocked(what):
        with open(LOG, "a") as f:
            f.write(what + "\\n")
        raise OSError("network blocked by test: " + what)
    def hook(event, args):
        if event == "socket.connect":
            addr = args[1]
            host = addr[0] if isinstance(addr, tuple) else str(addr)
            if host not in ("127.0.0.1", "::1", "localhost") and not str(host).startswith("/"):
                _blocked(f"connect {addr!r}")
        elif event == "socket.getaddrinfo":
            if args[0] not in ("127.0.0.1", "::1", "localhost"):
                _blocked(f"getaddrinfo {args[0]!r}")
    sys.addaudithook(hook)
""")


def test_shipped_vocab_is_the_published_file():
    data = tk.VOCAB_FILE.read_bytes()
    assert hashlib.sha256(data).hexdigest() == tk.VOCAB_SHA256
    assert len(data.splitlines()) == tk.N_MERGEABLE
    if SHARED_VOCAB.exists():
        assert SHARED_VOCAB.read_bytes() == data
    cached = tk.TIKTOKEN_CACHE / hashlib.sha1(
        b"https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken").hexdigest()
    assert cached.read_bytes() == data  # what tiktoken looks up under TIKTOKEN_CACHE_DIR


def test_encoding_and_specials():
    tok = tk.get_tokenizer()
    ids = tok.encode("Hello, world! 你好 🌍")
    assert all(i < tk.N_MERGEABLE for i in ids) and tok.decode(ids) == "Hello, world! 你好 🌍"
    # Typed control tokens stay ordinary text.
    ids = tok.encode("a <|end|> b <|start|>")
    assert not any(tok.is_special(i) for i in ids) and tok.decode(ids) == "a <|end|> b <|start|>"
    assert tok.special("<|start|>") == 200006 and tok.special("<|call|>") == 200012
    assert tok.decode([200006, 1428, 200008]) == "<|start|>user<|message|>"
    assert tk.SPECIAL_TOKENS["<|reserved_201087|>"] == 201087 and len(tk.SPECIAL_TOKENS) == 201088 - 199998


def test_incremental_decoder_never_splits_characters():
    tok = tk.get_tokenizer()
    text = "naïve 🌍🚀 日本語テキスト"
    dec = tk.IncrementalDecoder(tok)
    pieces = [dec.feed(t) for t in tok.encode(text)] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_corrupt_vocab_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "o200k_base.tiktoken"
    bad.write_bytes(tk.VOCAB_FILE.read_bytes()[:-10])
    monkeypatch.setattr(tk, "VOCAB_FILE", bad)
    tk.verify_vocab.cache_clear()
    try:
        with pytest.raises(tk.VocabularyError, match="sha256"):
            tk.verify_vocab()
    finally:
        tk.verify_vocab.cache_clear()


def run_offline(tmp_path: Path, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a child whose network is blocked, with empty caches and no proxy."""
    log = tmp_path / "blocked.log"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower() and not k.startswith("TIKTOKEN")}
    env.update(HOME=str(tmp_path), TMPDIR=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "cache"))
    script = GUARD + "\n" + code
    proc = subprocess.run([sys.executable, "-c", script, str(log)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert not log.exists(), f"network was attempted: {log.read_text()}"
    return proc


def test_guard_really_blocks(tmp_path):
    """The guard itself works: a connection attempt (to a closed loopback-looking name that is
    not in the allow list) is refused and logged. No packet leaves: the hook fires first."""
    log = tmp_path / "blocked.log"
    code = GUARD + textwrap.dedent("""
        import socket
        try:
            socket.getaddrinfo("example.invalid", 80)
        except OSError as e:
            print("refused:", e)
    """)
    out = subprocess.run([sys.executable, "-c", code, str(log)], capture_output=True, text=True, timeout=60)
    assert "refused: network blocked" in out.stdout
    assert "example.invalid" in log.read_text()


def test_tokenizer_and_harmony_load_with_network_blocked(tmp_path):
    proc = run_offline(tmp_path, textwrap.dedent("""
        from gptoss.tokenizer import get_tokenizer, configure_offline_env
        tok = get_tokenizer()
        assert tok.decode(tok.encode("offline ok")) == "offline ok"
        configure_offline_env()
        from openai_harmony import load_harmony_encoding, HarmonyEncodingName
        enc = load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)
        assert enc.encode("offline ok", allowed_special=set()) == tok.encode("offline ok")
        print("OK")
    """))
    assert proc.returncode == 0, proc.stderr
    assert "OK" in proc.stdout
