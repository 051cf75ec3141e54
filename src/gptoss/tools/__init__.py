"""Tools the model can call: a small ABC, a registry by namespace, developer functions."""

from gptoss.tools.base import FunctionHandler, Tool, ToolRegistry

__all__ = ["FunctionHandler", "Tool", "ToolRegistry"]
