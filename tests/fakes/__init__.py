"""Shared fakes for the tests: task-folder builders, an OpenAI-compatible server, judges."""
