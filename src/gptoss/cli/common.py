"""Helpers shared by CLI commands: error reporting, argument types, progress bars."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from gptoss.config import ConfigError
from gptoss.weights.safetensors_io import CheckpointError

err_console = Console(stderr=True, soft_wrap=True)  # errors stay one line in logs and pipes


def run_guarded(fn: Callable[[], int]) -> int:
    """Turn expected user errors into one red line and exit status 1 (never a traceback)."""
    try:
        return fn()
    except (CheckpointError, ConfigError, ValueError, FileNotFoundError, PermissionError) as e:
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False)
        return 1
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130


def token_list(text: str) -> list[int]:
    """argparse type for ``1,2,3``."""
    try:
        return [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids like 1,2,3; got {text!r}") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {value}")
    return value


def model_path(text: str) -> str:
    """argparse type for --model: a path as given; empty (the default) means the bundled gpt-oss-tiny."""
    if text:
        return text
    from gptoss.models import default_model_path

    try:
        return str(default_model_path())
    except ValueError as e:  # argparse reports it as one line: "argument --model: ..."
        raise argparse.ArgumentTypeError(str(e)) from None


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    # A string default goes through ``type`` only when --model is absent, so the bundled model's manifest is
    # verified then (not for --help, not when a path is given).
    p.add_argument("--model", default="", type=model_path, metavar="PATH",
                   help="checkpoint directory (OpenAI original/ or Hugging Face layout); default: the bundled "
                        "gpt-oss-tiny playground model")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"],
                   help="activation and dense-weight dtype (default: %(default)s; experts stay MXFP4)")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: %(default)s)")
    p.add_argument("--ops", default="auto", choices=["auto", "reference", "cpu"],
                   help="compute kernels: cpu = packed-MXFP4 C kernels (compiled on first use), reference = "
                        "plain PyTorch, auto = cpu on a CPU device when its kernels build (default: %(default)s)")


@contextmanager
def byte_progress(description: str, total: int, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """A progress bar advanced by byte counts; silent when stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield lambda n: None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
