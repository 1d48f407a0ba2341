"""What one verify run will do: the tasks (each runs some checks) and the components skipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from jetson_mamba.verify.report import CheckResult, Skipped


@dataclass
class Task:
    """A unit of work for the progress bar: runs some checks."""

    label: str
    run: Callable[[], List[CheckResult]]


@dataclass
class Plan:
    device: str
    quick: bool
    dtypes: Tuple[str, ...]
    backends: Optional[Sequence[str]]
    seed: int
    tasks: List[Task]
    skipped: List[Skipped]

    def generator(self, salt: int) -> Any:
        """A CPU generator per task: fresh inputs each run (new seed), reproducible within one (`--seed`)."""
        import torch

        return torch.Generator().manual_seed(self.seed * 1000003 + salt)
