"""What one verify run will do: the tasks (each runs some checks) and the components skipped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from jetson_mamba.verify.report import ERROR, CheckResult, Skipped


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


def absent_or_broken(plan: Plan, component: str, what: str, why: Optional[str]) -> None:
    """Not installed: skipped, with why. Installed but failing to import: a failed check (the stack is broken)."""
    if why == "not installed":
        plan.skipped.append(Skipped(component, f"{what}: {why}"))
        return
    failure = CheckResult(component, "import", "-", "import", ERROR, None, 0.0, message=f"{what}: {why}")
    plan.tasks.append(Task(f"{component} import", lambda: [failure]))
