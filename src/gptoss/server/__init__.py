"""OpenAI-compatible Responses and Chat Completions server (``gptoss serve``).

``create_app(engine)`` builds the FastAPI app; an engine is a
:class:`~gptoss.server.process_engine.ProcessEngine` (the model in a child process: what ``gptoss serve`` uses),
a :class:`~gptoss.server.engine.ModelEngine` (a loaded model behind one worker thread of this process) or, in
tests, a :class:`~gptoss.server.engine.StubEngine`.
"""

from gptoss.server.app import create_app
from gptoss.server.engine import Engine, EngineBusy, ModelEngine, StubEngine

__all__ = ["Engine", "EngineBusy", "ModelEngine", "StubEngine", "create_app"]
