"""``gptoss <command>``: one entry point, subcommands imported only when used."""

from __future__ import annotations

import argparse
import importlib
import sys

from gptoss import __version__

# name -> (module, one-line help). Each module has add_arguments(parser) and run(args) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "checkpoint": ("gptoss.cli.checkpoint", "create checkpoints (random weights for tests and benchmarks)"),
    "inspect": ("gptoss.cli.inspect", "describe a checkpoint: layout, sizes, fingerprints, problems"),
    "chat": ("gptoss.cli.chat", "talk to a model interactively (streaming, reasoning, tools)"),
    "generate": ("gptoss.cli.generate", "answer one prompt (or continue raw token ids)"),
    "train": ("gptoss.cli.train", "train or fine-tune on harmony conversations (JSONL)"),
    "train-tiny": ("gptoss.cli.train_tiny", "rebuild the bundled gpt-oss-tiny playground model reproducibly"),
    "corpus": ("gptoss.cli.corpus", "write the synthetic harmony training corpus (JSONL)"),
    "eval": ("gptoss.cli.eval", "score a model on held-out tasks (gptoss eval tiny)"),
    "bench": ("gptoss.cli.bench", "measure prefill/decode speed, memory and bandwidth use"),
    "bench-serve": ("gptoss.cli.bench_serve", "aggregate tokens/s of a live server at 1..N concurrent streams "
                    "(also: gptoss bench serve)"),
    "serve": ("gptoss.cli.serve", "OpenAI-compatible Responses and Chat Completions server"),
    "index": ("gptoss.cli.index", "build the local search index used by the browser tool"),
    "doctor": ("gptoss.cli.doctor", "report offline guard, sandbox, model and index status"),
}

EPILOG = """examples:
  gptoss checkpoint random /tmp/tiny --preset tiny
  gptoss inspect /tmp/tiny
  gptoss generate --model /tmp/tiny --tokens 1,2,3 --max-tokens 8 --temperature 0
  gptoss bench --model /tmp/tiny --prompt-tokens 128 --gen-tokens 16
"""


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gptoss", description="Local, private runtime for OpenAI's gpt-oss models.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"gptoss {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if a in COMMANDS), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == wanted:  # only the chosen command's module is imported
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from gptoss import guard

    guard.set_offline_env()  # before any command module imports a hub or telemetry client
    guard.install()  # every command: loopback and $GPTOSS_ALLOWED_HOSTS only (tools add their hosts)
    if argv[:2] == ["bench", "serve"]:  # `gptoss bench serve` reads better than `bench-serve`
        argv = ["bench-serve", *argv[2:]]
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    from gptoss.cli.common import run_guarded

    def run() -> int:
        if getattr(args, "ops", None) is not None:  # commands with add_model_arguments
            from gptoss import ops

            ops.select_backend(args.ops, device=getattr(args, "device", "cpu"))
        return module.run(args)

    return run_guarded(run)


if __name__ == "__main__":
    sys.exit(main())
