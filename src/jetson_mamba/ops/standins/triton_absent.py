"""Stands in for the `triton` package where it is not installed, so mamba-ssm's Triton modules import.

Why: mamba-ssm imports `triton` at the top of every module under `mamba_ssm/ops/triton/` (and
`mamba_ssm/__init__` reaches them through Mamba-1's `selective_scan_interface`), so without
Triton (older Jetson images, some aarch64 torch builds) `import mamba_ssm` fails even for code
that never launches a Triton kernel. With the `triton-optional` patch those imports fall back to
this module: decorators (`jit`, `autotune`, `heuristics`) and everything used at module level
(`Config`, `cdiv`, `tl.constexpr`, dtypes) are accepted; launching a kernel raises `TritonMissingError`
naming the fix. The patched entry points route to jetson-mamba's portable kernels instead.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence

__jetson_mamba_standin__ = True
__version__ = "0.0.0"  # mamba-ssm compares triton.__version__ at import time; older than every real one

FIX = "pip install triton (a version your torch supports), or use jetson-mamba's portable kernels on this call"


class TritonMissingError(RuntimeError):
    """A Triton kernel was launched while Triton is not installed."""


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


class Config:
    """`triton.Config`: module-level code reads its fields (layer_norm prunes configs by num_warps)."""

    def __init__(self, kwargs: Optional[Dict[str, Any]] = None, num_warps: int = 4, num_stages: int = 3,
                 **options: Any) -> None:
        self.kwargs = dict(kwargs or {})
        self.num_warps = num_warps
        self.num_stages = num_stages
        self.__dict__.update(options)


class _Kernel:
    """What `@triton.jit` (and autotune/heuristics on top) gives back: refuses to launch."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self.configs: List[Config] = []  # mamba-ssm reads an autotuned kernel's configs at import time
        self.__name__ = getattr(fn, "__name__", "kernel")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __getitem__(self, grid: Any) -> Callable[..., Any]:
        def launch(*args: Any, **kwargs: Any) -> Any:
            raise TritonMissingError(f"Triton kernel {self.__name__} cannot run: triton is not installed; {FIX}")

        return launch

    def __call__(self, *args: Any, **kwargs: Any) -> Any:  # a @triton.jit helper called from another kernel
        return self[None](*args, **kwargs)


def _kernel(fn: Any) -> _Kernel:
    return fn if isinstance(fn, _Kernel) else _Kernel(fn)


def jit(fn: Any = None, **options: Any) -> Any:
    """`@triton.jit` and `@triton.jit(...)`."""
    return _kernel(fn) if fn is not None else _kernel


def autotune(configs: Sequence[Config], key: Any = None, **options: Any) -> Callable[[Any], _Kernel]:
    def decorate(fn: Any) -> _Kernel:
        kernel = _kernel(fn)
        kernel.configs = list(configs)
        return kernel

    return decorate


def heuristics(values: Any) -> Callable[[Any], _Kernel]:
    return _kernel


class _Absent:
    """Any other attribute of triton / triton.language (`tl.constexpr`, dtypes, `triton.testing`): a placeholder."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> _Absent:
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Absent(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> _Absent:
        return _Absent(f"{self._name}(...)")

    def __repr__(self) -> str:
        return f"<{self._name}: triton is not installed>"


language = _Absent("triton.language")


def __getattr__(name: str) -> _Absent:  # PEP 562: triton.autotune, triton.Config, triton.testing, ...
    if name.startswith("__"):
        raise AttributeError(name)
    return _Absent(f"triton.{name}")
