"""What one verify run will do: the tasks (each runs some checks) and the components skipped."""

from __future__ import annotations

from dataclasses import dataclass, field
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
    notes: List[str] = field(default_factory=list)  # how this run differs from plain use (e.g. pinned autotuning)

    @property
    def forced(self) -> Optional[str]:
        """The built-in backend the end-to-end checks run on (`ops.use_backend`), when exactly one is asked."""
        if self.backends and len(self.backends) == 1 and self.backends[0] in ("cuda", "triton", "torch"):
            return self.backends[0]
        return None

    def forced_unusable(self, op: str) -> Optional[str]:
        """Why the forced backend cannot run `op` here (None: it can, or none is forced): then the checks
        that dispatch (stand-ins, public ops, blocks) are skipped instead of failing for the wrong reason."""
        import torch

        from jetson_mamba.errors import BackendUnavailableError
        from jetson_mamba.ops.backend import select_backend

        if self.forced is None:
            return None
        try:
            select_backend(op, self.device, torch.float32, name=self.forced)
        except BackendUnavailableError as exc:
            return exc.message
        return None

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
