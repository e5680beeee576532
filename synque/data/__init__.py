"""Task data: file reading, the example schema, the `Task` base, the paper's layouts and
user folders. A task is built from its config with `_target_` (see `synque.components`)."""

from synque.data.task import NO_GROUP, RELEASED_SEEDS, Task

__all__ = ["NO_GROUP", "RELEASED_SEEDS", "Task"]
