"""``gptoss chat``: an interactive, streaming conversation (or one prompt per line from a pipe)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from openai_harmony import Conversation, Message
from rich.console import Console

from gptoss.cli.conversation import (
    add_conversation_arguments,
    build_registry,
    builtin_options,
    citation_lines,
    close_registry,
    describe_result,
    header_messages,
    resolve_date,
)
from gptoss.harmony.render import EFFORTS, parse_effort, tool_result_message, user_message

HELP = """commands:
  /effort low|medium|high   change reasoning effort (now: {effort})
  /reasoning                show or hide the chain of thought (now: {shown})
  /reset                    forget the conversation (and the python tool's variables)
  /save FILE | /load FILE   write or read the conversation as JSON
  /tools                    list the tools the model may call
  /result TEXT              answer the pending function call with TEXT
  /help                     this text;  /exit (or Ctrl-D) leaves
input: end a line with \\ to continue it, or wrap several lines in \"\"\" ... \"\"\".
Ctrl-C stops the current answer; Ctrl-C at the prompt clears the line."""

EPILOG = """examples:
  gptoss chat --model /path/to/gpt-oss-20b
  gptoss chat --model M --reasoning-effort high --show-reasoning
  printf 'Hi\\nWhat is 2+2?\\n' | gptoss chat --model M     # one prompt per line, answers on stdout
  gptoss index add ~/notes && gptoss chat --model M --browser local   # answers cite your files
  gptoss chat --model M --python                           # sandboxed, stateful Python
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = EPILOG
    add_conversation_arguments(p)


class ChatSession:
    """Conversation state and slash commands, independent of where input comes from."""

    def __init__(self, model, args: argparse.Namespace, console: Console, interactive: bool,
                 source=None) -> None:
        """``source`` replaces the model's engine as the token source (tests script one)."""
        from gptoss.agent import Agent, engine_source

        self.args = args
        self.console = console
        self.interactive = interactive
        self.effort = args.effort
        self.show_reasoning = args.show_reasoning
        self.date = resolve_date(args.date)
        self.builtins = builtin_options(args)
        self.registry = build_registry(args, self.builtins)
        self.agent = Agent(source or engine_source(model.transformer), self.registry, args.max_tool_rounds)
        self.history: list[Message] = []  # everything after the system/developer messages
        self.pending: list = []
        self.cancel = threading.Event()

    def header(self) -> list[Message]:
        return header_messages(self.effort, self.date, self.args.instructions, self.registry)

    # -- commands --------------------------------------------------------------------------
    def command(self, line: str) -> bool:
        """Run a slash command; False means leave the chat."""
        name, _, arg = line[1:].partition(" ")
        arg = arg.strip()
        say = self.console.print
        if name in ("exit", "quit"):
            return False
        if name == "help":
            say(HELP.format(effort=self.effort, shown="shown" if self.show_reasoning else "hidden"),
                markup=False, highlight=False)
        elif name == "effort":
            try:
                self.effort = parse_effort(arg) if arg else self.effort
                say(f"reasoning effort: {self.effort}", style="green")
            except ValueError as e:
                say(f"error: {e}", style="red", markup=False)
        elif name == "reasoning":
            self.show_reasoning = not self.show_reasoning
            say(f"reasoning {'shown' if self.show_reasoning else 'hidden'}", style="green")
        elif name == "reset":
            self.history, self.pending = [], []
            self.new_tools()
            say("conversation cleared", style="green")
        elif name == "save":
            self._save(arg)
        elif name == "load":
            self._load(arg)
        elif name == "tools":
            names = self.registry.names()
            say("tools: " + (", ".join(names) if names else "none (add --browser local, --python or --functions FILE)"),
                markup=False, highlight=False)
        elif name == "result":
            if not self.pending:
                say("no function call is waiting for a result", style="yellow")
            else:
                call = self.pending.pop(0)
                self.history.append(tool_result_message(call.recipient, arg, call.channel or "commentary"))
                if not self.pending:
                    self.respond()
        else:
            say(f"unknown command /{name}; /help lists them", style="yellow", markup=False)
        return True

    def new_tools(self) -> None:
        """Fresh built-in tools (a new python interpreter, an empty page stack)."""
        close_registry(self.registry)
        self.registry = build_registry(self.args, self.builtins)
        self.agent.tools = self.registry

    def close(self) -> None:
        close_registry(self.registry)

    def interrupt(self) -> None:
        """Ctrl-C during an answer: stop generating, and stop a running python call."""
        self.cancel.set()
        python = self.registry.get("python")
        if python is not None and hasattr(python, "interrupt"):
            python.interrupt()

    def _save(self, path: str) -> None:
        if not path:
            self.console.print("usage: /save FILE", style="yellow")
            return
        data = {"gptoss_chat": 1, "effort": self.effort,
                "messages": json.loads(Conversation.from_messages(self.history).to_json())["messages"]}
        try:
            Path(path).expanduser().write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        except OSError as e:
            self.console.print(f"error: cannot write {path}: {e.strerror}", style="red", markup=False)
            return
        self.console.print(f"saved {len(self.history)} messages to {path}", style="green", markup=False)

    def _load(self, path: str) -> None:
        if not path:
            self.console.print("usage: /load FILE", style="yellow")
            return
        try:
            data = json.loads(Path(path).expanduser().read_text())
            messages = Conversation.from_json(json.dumps({"messages": data["messages"]})).messages
            effort = parse_effort(data.get("effort", self.effort))
        except OSError as e:
            self.console.print(f"error: cannot read {path}: {e.strerror}", style="red", markup=False)
            return
        except (ValueError, KeyError, TypeError) as e:
            self.console.print(f"error: {path} is not a saved chat ({e})", style="red", markup=False)
            return
        self.history, self.effort, self.pending = list(messages), effort, []
        self.console.print(f"loaded {len(messages)} messages from {path}", style="green", markup=False)

    # -- a turn ----------------------------------------------------------------------------
    def ask(self, text: str) -> None:
        if self.pending:
            self.console.print("(a function call is waiting: answer it with /result TEXT)", style="yellow")
            return
        self.history.append(user_message(text))
        self.respond()

    def respond(self) -> None:
        from gptoss.agent import ToolResult, TurnDone
        from gptoss.engine.sampling import SamplingParams
        from gptoss.harmony.parser import (
            CommentaryDelta,
            FinalDelta,
            MessageDone,
            ReasoningDelta,
            ToolCallArgsDelta,
            ToolCallStarted,
        )

        a = self.args
        params = SamplingParams(a.max_tokens, a.temperature, a.top_p, 0, a.seed)
        header = self.header()
        say = self.console.print
        self.cancel.clear()
        reasoning_tokens = 0
        in_reasoning = False
        done = None
        with self._sigint_cancels():
            for ev in self.agent.run(header + self.history, params, self.cancel):
                if isinstance(ev, ReasoningDelta):
                    if self.show_reasoning:
                        say(ev.text, end="", style="dim italic", markup=False, highlight=False)
                    in_reasoning = True
                elif isinstance(ev, MessageDone):
                    if in_reasoning:
                        reasoning_tokens += len(ev.message.tokens)
                        if self.show_reasoning:
                            say()
                        elif self.interactive:
                            say(f"(thought for {reasoning_tokens} tokens; /reasoning shows it)", style="dim")
                    in_reasoning = False
                elif isinstance(ev, FinalDelta | CommentaryDelta):
                    say(ev.text, end="", markup=False, highlight=False)
                elif isinstance(ev, ToolCallStarted):
                    say(f"→ {ev.recipient} ", end="", style="cyan", markup=False)
                elif isinstance(ev, ToolCallArgsDelta):
                    say(ev.text, end="", style="cyan", markup=False, highlight=False)
                elif isinstance(ev, ToolResult):
                    say(f"\n← {describe_result(ev.output)}", style="dim", markup=False, highlight=False)
                elif isinstance(ev, TurnDone):
                    done = ev
        assert done is not None
        say()
        answer = "".join(m.content for m in done.new_messages if m.channel == "final" and not m.is_tool_call)
        sources = citation_lines(answer, self.registry)
        if sources:
            say("sources:\n" + "\n".join(f"  {line}" for line in sources), style="cyan", markup=False)
        self.history = done.messages[len(header):]
        self.pending = list(done.pending_calls)
        u = done.usage
        notes = {"cancelled": "stopped", "length": f"hit --max-tokens {a.max_tokens}",
                 "tool_calls": "waiting for /result", "max_tool_rounds": "too many tool rounds"}
        note = f", {notes[done.finish_reason]}" if done.finish_reason in notes else ""
        if self.interactive:
            say(f"[{u.completion_tokens} tokens, {u.tokens_per_second:.1f} tok/s{note}]", style="dim")
        elif note:
            print(f"[{note.lstrip(', ')}]", file=sys.stderr)

    def _sigint_cancels(self):
        session = self

        class _Ctx:
            def __enter__(self):
                if threading.current_thread() is threading.main_thread():
                    self.old = signal.signal(signal.SIGINT, lambda *_: session.interrupt())
                return self

            def __exit__(self, *exc):
                if hasattr(self, "old"):
                    signal.signal(signal.SIGINT, self.old)

        return _Ctx()


def read_prompts(stream: TextIO, interactive: bool, console: Console) -> Iterator[str]:
    """Yield complete user inputs. Interactive input supports ``\\`` continuations and
    triple-quoted blocks; Ctrl-C at the prompt clears the line, Ctrl-D ends."""
    if not interactive:
        for line in stream:
            if line.strip():
                yield line.rstrip("\n")
        return
    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:
        pass
    while True:
        try:
            line = input(">>> ")
            if line.strip() == '"""':
                block = []
                while (more := input("... ")).strip() != '"""':
                    block.append(more)
                line = "\n".join(block)
            while line.endswith("\\"):
                line = line[:-1] + "\n" + input("... ")
        except KeyboardInterrupt:
            console.print()
            continue
        except EOFError:
            console.print()
            return
        if line.strip():
            yield line


def run(args: argparse.Namespace) -> int:
    from gptoss.api import Model

    interactive = sys.stdin.isatty()
    builtin_options(args)  # a bad --browser/--python combination fails before the model loads
    console = Console(highlight=False, soft_wrap=True)
    if interactive:
        console.print(f"loading {args.model} ...", style="dim", markup=False)
    model = Model.load(args.model, dtype=args.dtype, device=args.device)
    session = ChatSession(model, args, console, interactive)
    if interactive:
        console.print(f"gptoss chat · effort {session.effort} · /help for commands · Ctrl-D to leave",
                      style="bold", markup=False)
    try:
        for text in read_prompts(sys.stdin, interactive, console):
            if text.startswith("/"):
                if not session.command(text.strip()):
                    break
            else:
                session.ask(text)
    finally:
        session.close()
    return 0


__all__ = ["EFFORTS", "ChatSession", "add_arguments", "run"]
