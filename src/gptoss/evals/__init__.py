"""Evaluation suites run against a model through the agent loop (``gptoss eval``)."""
