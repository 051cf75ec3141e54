"""The python tool's sandbox.

- ``worker.py`` runs inside it: a standalone, stdlib-only script (it never imports gptoss) that the
  host mounts read-only and runs with the host's own Python interpreter;
- ``host.py`` runs in gptoss: it builds the bwrap command line, starts and ends the worker and
  exchanges length-prefixed JSON frames with it.
"""

from pathlib import Path

WORKER = Path(__file__).with_name("worker.py")

__all__ = ["WORKER"]
