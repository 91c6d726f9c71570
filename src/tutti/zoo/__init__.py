"""The expert zoo: seeded tasks with train/dev/test splits, and one LoRA expert per task for SmolLM2-135M.

>>> from tutti.zoo import load_task, expert_path, TASKS
>>> rows = load_task("arithmetic", "dev")           # 200 rows {"id", "input", "target", "choices"?}
>>> expert_path("arithmetic")                        # a PEFT LoRA folder
"""

from tutti.zoo import generators as _generators  # registers the tasks
from tutti.zoo.metrics import exact_match, normalize_answer
from tutti.zoo.tasks import (
    SPLITS,
    SUGGESTED_TARGETS,
    TASKS,
    build_task,
    expert_path,
    load_task,
    mixed_tasks,
    task_groups,
    task_path,
    trained_tasks,
)

del _generators

__all__ = [
    "SPLITS",
    "SUGGESTED_TARGETS",
    "TASKS",
    "build_task",
    "exact_match",
    "expert_path",
    "load_task",
    "mixed_tasks",
    "normalize_answer",
    "task_groups",
    "task_path",
    "trained_tasks",
]
