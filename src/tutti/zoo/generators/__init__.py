"""Task generators; importing this package registers every task in :data:`tutti.zoo.tasks.TASKS`."""

from tutti.zoo.generators import facts, language, numeric

__all__ = ["facts", "language", "numeric"]
