"""Whole-model workloads (issue 18's table): upstream's modules on the compiled extensions vs on our stand-ins.

`block` is upstream's `mamba_ssm.modules.mamba_simple.Mamba(1024)` in bf16, forward and forward+backward;
`lm` a 130M-shaped `MambaLMHeadModel` in fp16: prefill, then `generate` without and with CUDA graphs
(`cg=True`); `yolo` Mamba-YOLO-T in fp16 autocast, eager, plus ours under
`torch.compile(mode="reduce-overhead")` (CUDA only). Both sides run in one process on the same model,
weights and inputs: upstream binds the extension modules at import (`selective_scan_interface.
selective_scan_cuda`, `cpp_functions.causal_conv1d_cuda`), so a side is chosen by pointing those module
attributes at the compiled extension or at the stand-in, never by re-importing. Our own models (Mamba-YOLO)
go through the dispatcher, so a side also forces the backend: `cuda` (compiled) or ours (triton on a GPU).
Without the compiled extensions only ours is timed and no ratio is given; the report says why.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import sys
import time
import types
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from jetson_mamba.bench.timing import Timing, measure, measure_rounds

if TYPE_CHECKING:
    from rich.console import Console

WORKLOADS = ("block", "lm", "yolo")
EXTENSIONS = {"selective_scan_cuda": "mamba-ssm", "causal_conv1d_cuda": "causal-conv1d"}
COMPILED, OURS = "compiled", "ours"
TIMED, UNAVAILABLE, ERROR, SKIPPED = "timed", "unavailable", "error", "skipped"
MS, TOKENS_PER_S = "ms", "tok/s"


@dataclass(frozen=True)
class Sizes:
    """Shapes of the three workloads: the issue's on a GPU, tiny ones on the CPU (`--small`)."""

    block_dim: int
    block_length: int
    lm_dim: int
    lm_layers: int
    lm_vocab: int
    prefill: int
    prompt: int
    new_tokens: int
    image: int


FULL = Sizes(block_dim=1024, block_length=2048, lm_dim=768, lm_layers=24, lm_vocab=50277, prefill=1024,
             prompt=100, new_tokens=256, image=640)
SMALL = Sizes(block_dim=32, block_length=32, lm_dim=32, lm_layers=2, lm_vocab=256, prefill=32, prompt=8,
              new_tokens=4, image=32)


@dataclass(frozen=True)
class WorkloadRow:
    """One measurement: ours and (when installed) the compiled extensions on the same call."""

    workload: str  # block, lm, yolo
    name: str  # "Mamba(1024) forward", "generate 256 tokens, cg=True", ...
    batch: int
    dtype: str
    unit: str  # ms (lower is better) or tok/s (higher is better)
    status: str = TIMED
    ours: Optional[float] = None
    compiled: Optional[float] = None
    message: Optional[str] = None

    @property
    def ratio(self) -> Optional[float]:
        """The issue's ratio, compiled time / our time: above 1 means ours is faster."""
        if not self.ours or not self.compiled:
            return None
        return self.compiled / self.ours if self.unit == MS else self.ours / self.compiled

    def to_json(self) -> Dict[str, Any]:
        return {"workload": self.workload, "name": self.name, "batch": self.batch, "dtype": self.dtype,
                "unit": self.unit, "status": self.status, "ours": self.ours, "compiled": self.compiled,
                "ratio": self.ratio, "message": self.message}


@dataclass(frozen=True)
class WorkloadReport:
    ours_backend: str
    compiled_missing: Optional[str]  # None: the compiled extensions were timed too; else why not
    rows: Tuple[WorkloadRow, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"ours_backend": self.ours_backend, "compiled_missing": self.compiled_missing,
                "rows": [r.to_json() for r in self.rows]}


@dataclass
class WorkloadSettings:
    device: str
    batches: Sequence[int]
    sizes: Sizes
    warmup: int
    repeat: int
    budget_s: float  # per workload: no new measurement starts once it is spent
    backends: Optional[Sequence[str]] = None  # --backend: ours is the first non-cuda one available


def _first_line(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".strip().splitlines() or [type(exc).__name__])[0][:300]


def compiled_missing(device: str) -> Optional[str]:
    """None when both compiled extensions can run on `device`, else why not (one line)."""
    import torch

    from jetson_mamba.ops._compiled import why_unavailable

    for name, package in EXTENSIONS.items():
        why = why_unavailable(name, package, torch.device(device), torch.float32)
        if why:
            return why
    return None


def ours_backend(device: str, wanted: Optional[Sequence[str]]) -> str:
    """The backend our stand-ins dispatch to: the preferred available one that is not the compiled kernel."""
    import torch

    from jetson_mamba.ops.backend import list_backends

    names = [i.name for i in list_backends("selective_scan", device, torch.float32) if i.available and i.name != "cuda"]
    chosen = [n for n in names if not wanted or n in wanted]
    return (chosen or names or ["torch"])[0]


def _import_upstream(name: str) -> Any:
    """Import an upstream module; if mamba_ssm's package __init__ cannot import (it pulls in
    `transformers` for generation), load the submodule without running that __init__."""
    try:
        return importlib.import_module(name)
    except ImportError:
        if not name.startswith("mamba_ssm.") or "mamba_ssm" in sys.modules:
            raise
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None or spec.submodule_search_locations is None:
        raise ImportError("mamba_ssm is not installed")
    package = types.ModuleType("mamba_ssm")
    package.__path__ = list(spec.submodule_search_locations)
    sys.modules["mamba_ssm"] = package
    return importlib.import_module(name)


class Sides:
    """Points upstream's modules (and our dispatcher) at the compiled kernels or at ours."""

    def __init__(self, backend: str, compiled: bool) -> None:
        from jetson_mamba.ops import standins
        from jetson_mamba.ops._compiled import load_extension

        standins.install(list(EXTENSIONS))  # where a compiled extension imports, it stays
        self.backend = backend
        self.compiled = {name: load_extension(name) for name in EXTENSIONS} if compiled else None

    def _ours(self) -> Dict[str, types.ModuleType]:
        from jetson_mamba.ops import standins

        # causal-conv1d < 1.5.1 (no cpp_functions) calls the extension's old returning API
        legacy = "causal_conv1d" in sys.modules and "causal_conv1d.cpp_functions" not in sys.modules
        conv = "causal_conv1d_cuda_legacy" if legacy else "causal_conv1d_cuda"
        return {"selective_scan_cuda": importlib.import_module(standins.MODULES["selective_scan_cuda"]),
                "causal_conv1d_cuda": importlib.import_module(standins.MODULES[conv])}

    @contextlib.contextmanager
    def side(self, which: str) -> Iterator[None]:
        from jetson_mamba.ops.backend import use_backend

        if which == COMPILED and self.compiled is None:
            raise RuntimeError("the compiled extensions are not installed")
        targets = self.compiled if which == COMPILED and self.compiled is not None else self._ours()
        holders = [m for key, m in list(sys.modules.items())
                   if m is not None and key.split(".")[0] in ("mamba_ssm", "causal_conv1d")]
        saved = [(m, name, vars(m)[name]) for m in holders for name in targets
                 if isinstance(vars(m).get(name), types.ModuleType)]
        for module, name, _ in saved:
            setattr(module, name, targets[name])
        try:
            with use_backend("cuda" if which == COMPILED else self.backend):
                yield
        finally:
            for module, name, original in saved:
                setattr(module, name, original)


class _Budget:
    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds

    @property
    def spent(self) -> bool:
        return time.monotonic() > self.deadline


def _timed(fn: Callable[[int], Any], settings: WorkloadSettings, warmup: Optional[int] = None,
           repeat: Optional[int] = None) -> Timing:
    return measure(fn, settings.device, settings.warmup if warmup is None else warmup,
                   settings.repeat if repeat is None else repeat, max_time_s=10.0)


def _measure_row(row: WorkloadRow, sides: Sides, budget: _Budget, on_row: Callable[[WorkloadRow], None],
                 time_side: Callable[[str], float], which: Sequence[str] = (OURS, COMPILED),
                 notes: Sequence[str] = ()) -> WorkloadRow:
    """`row` with each side's number (time_side(side) -> ms or tok/s); a side that fails is named on the
    row and the other side is still timed; once the budget is spent the row is marked skipped. `notes`: a
    list that time_side adds lines to, for the row's message. The row is handed to `on_row` as soon as it
    is done."""
    for side in which:
        if side == COMPILED and sides.compiled is None:
            continue
        if budget.spent:
            row = replace(row, status=SKIPPED, message=row.message or "time budget spent (--budget)")
            break
        try:
            with sides.side(side):
                value = time_side(side)
        except Exception as exc:  # out of memory, a capture that fails: say which side, time the other
            row = replace(row, status=ERROR,
                          message="; ".join(filter(None, (row.message, f"{side}: {_first_line(exc)}"))))
            continue
        row = replace(row, **{side: value})
    if notes:
        row = replace(row, message="; ".join(filter(None, (row.message, *notes))))
    on_row(row)
    return row


def _block(settings: WorkloadSettings, sides: Sides, budget: _Budget,
           on_row: Callable[[WorkloadRow], None]) -> List[WorkloadRow]:
    import torch

    mamba_simple = _import_upstream("mamba_ssm.modules.mamba_simple")
    s = settings.sizes
    dtype = torch.bfloat16 if settings.device.startswith("cuda") else torch.float32
    torch.manual_seed(0)
    model = mamba_simple.Mamba(d_model=s.block_dim).to(device=settings.device, dtype=dtype)
    rows = []
    for batch in settings.batches:
        x = torch.randn(batch, s.block_length, s.block_dim, device=settings.device, dtype=dtype)

        def forward(_i: int, x: Any = x) -> Any:
            with torch.no_grad():
                return model(x)

        def forward_backward(_i: int, x: Any = x) -> Any:
            model.zero_grad(set_to_none=True)
            out = model(x)
            out.backward(torch.ones_like(out))
            return out

        for direction, fn in (("forward", forward), ("forward+backward", forward_backward)):
            row = WorkloadRow("block", f"Mamba({s.block_dim}) L{s.block_length} {direction}", batch,
                              str(dtype).replace("torch.", ""), MS)
            rows.append(_measure_row(row, sides, budget, on_row,
                                     lambda _side, fn=fn: _timed(fn, settings).median_ms))  # type: ignore[misc]
    return rows


def _lm_model(settings: WorkloadSettings) -> Any:
    """A 130M-shaped MambaLMHeadModel (random weights). On the CPU without Triton norms: plain LayerNorm,
    and the decode step's torch path (upstream's own fallback when its Triton state update is absent)."""
    import torch

    config_mamba = _import_upstream("mamba_ssm.models.config_mamba")
    mixer = _import_upstream("mamba_ssm.models.mixer_seq_simple")
    on_gpu = settings.device.startswith("cuda")
    if not on_gpu:
        _import_upstream("mamba_ssm.modules.mamba_simple").selective_state_update = None
    s = settings.sizes
    config = config_mamba.MambaConfig(d_model=s.lm_dim, n_layer=s.lm_layers, vocab_size=s.lm_vocab,
                                      rms_norm=on_gpu, fused_add_norm=on_gpu, residual_in_fp32=True)
    torch.manual_seed(0)
    return mixer.MambaLMHeadModel(config, device=settings.device,
                                  dtype=torch.float16 if on_gpu else torch.float32).eval()


def _lm(settings: WorkloadSettings, sides: Sides, budget: _Budget,
        on_row: Callable[[WorkloadRow], None]) -> List[WorkloadRow]:
    import torch

    model = _lm_model(settings)
    s = settings.sizes
    on_gpu = settings.device.startswith("cuda")
    dtype = "float16" if on_gpu else "float32"
    generator = torch.Generator().manual_seed(0)
    rows = []
    for batch in settings.batches:
        ids = torch.randint(0, s.lm_vocab, (batch, s.prefill), generator=generator).to(settings.device)
        prompt = ids[:, :s.prompt]

        def prefill(_i: int, ids: Any = ids) -> Any:
            with torch.no_grad():
                return model(ids)

        row = WorkloadRow("lm", f"130M-shaped prefill L{s.prefill}", batch, dtype, MS)
        rows.append(_measure_row(row, sides, budget, on_row, lambda _side: _timed(prefill, settings).median_ms))
        for cg in (False, True):
            name = f"generate {s.new_tokens} tokens{', cg=True' if cg else ' without CUDA graphs'} (all sequences)"
            row = WorkloadRow("lm", name, batch, dtype, TOKENS_PER_S)
            if cg and not on_gpu:
                row = replace(row, status=UNAVAILABLE, message="CUDA graphs need a CUDA device")
                on_row(row)
                rows.append(row)
                continue

            def tokens_per_s(_side: str, cg: bool = cg, prompt: Any = prompt, batch: int = batch) -> float:
                if hasattr(model, "_decoding_cache"):
                    del model._decoding_cache  # a graph captured on the other side must not be replayed

                def generate(_i: int) -> Any:
                    with torch.no_grad():
                        return model.generate(prompt, max_length=s.prompt + s.new_tokens, top_k=1, cg=cg)

                ms = _timed(generate, settings, warmup=1, repeat=min(settings.repeat, 3)).median_ms
                return batch * s.new_tokens / (ms / 1e3)

            rows.append(_measure_row(row, sides, budget, on_row, tokens_per_s))
    return rows


# torch.compile(mode="reduce-overhead")'s row: its first calls compile, run eagerly, capture the CUDA graph
# (cudagraph trees record on the second call of a graph), and our Triton autotuners run at their first
# eager calls; 3 warm-up calls left some of that inside the timed calls, and one median of 20 calls moved
# from 7.8 to 15.1 ms between two runs of edge.sh (RESULTS.md, lab H100 2026-12-06). Warm-up calls first,
# then the median of several rounds, with the rounds' spread in the row's message.
GRAPH_WARMUP = 10
GRAPH_ROUNDS = 5


def _yolo(settings: WorkloadSettings, sides: Sides, budget: _Budget,
          on_row: Callable[[WorkloadRow], None]) -> List[WorkloadRow]:
    import torch

    from jetson_mamba.models.mamba_yolo.standalone import build_detector

    s = settings.sizes
    on_gpu = settings.device.startswith("cuda")
    kind = settings.device.split(":")[0]
    torch.manual_seed(0)
    model = build_detector("t").to(settings.device).eval()
    rows = []
    for batch in settings.batches:
        x = torch.rand(batch, 3, s.image, s.image, generator=torch.Generator().manual_seed(0)).to(settings.device)

        def call(net: Any, x: Any = x) -> Callable[[int], Any]:
            def forward(_i: int) -> Any:
                with torch.no_grad(), torch.autocast(kind, dtype=torch.float16, enabled=on_gpu):
                    return net(x)
            return forward

        dtype = "float16 autocast" if on_gpu else "float32"
        eager = _measure_row(WorkloadRow("yolo", f"Mamba-YOLO-T {s.image}x{s.image} eager", batch, dtype, MS),
                             sides, budget, on_row, lambda _side: _timed(call(model), settings).median_ms)
        rows.append(eager)
        graphs = WorkloadRow("yolo", f"Mamba-YOLO-T {s.image}x{s.image} ours torch.compile(reduce-overhead) "
                                     "vs compiled eager", batch, dtype, MS, compiled=eager.compiled)
        if not on_gpu:
            graphs = replace(graphs, status=UNAVAILABLE,
                             message="mode=reduce-overhead (CUDA graphs) needs a CUDA device")
            on_row(graphs)
        else:
            compiled_model = torch.compile(model, mode="reduce-overhead")
            notes: List[str] = []

            def graphed(_side: str, net: Any = compiled_model, notes: List[str] = notes) -> float:
                timed = measure_rounds(call(net), settings.device, max(settings.warmup, GRAPH_WARMUP), settings.repeat,
                                       GRAPH_ROUNDS)
                notes.append(f"median of {GRAPH_ROUNDS} rounds' medians ({', '.join(f'{m:.3f}' for m in timed.medians_ms)}"
                             f" ms; spread {timed.spread:.0%}) after {max(settings.warmup, GRAPH_WARMUP)} warm-up calls")
                return timed.timing.median_ms

            graphs = _measure_row(graphs, sides, budget, on_row, graphed, which=(OURS,), notes=notes)
        rows.append(graphs)
    return rows


RUNNERS = {"block": _block, "lm": _lm, "yolo": _yolo}


def run_workloads(names: Sequence[str], settings: WorkloadSettings,
                  on_row: Callable[[WorkloadRow], None] = lambda row: None,
                  console: Optional[Console] = None) -> WorkloadReport:
    """Each named workload at each batch, ours and (when installed) compiled, with a progress bar on `console`
    (none without one);
    `on_row` sees every row as soon as it is done (partial results). A workload that cannot be set up
    (mamba_ssm absent) gives one row saying why."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    missing = compiled_missing(settings.device)
    backend = ours_backend(settings.device, settings.backends)
    sides = Sides(backend, compiled=missing is None)
    rows: List[WorkloadRow] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console,
                  transient=True, disable=console is None) as bar:
        task = bar.add_task("workloads", total=len(names))

        def done(row: WorkloadRow) -> None:
            bar.update(task, description=f"{row.workload}: {row.name} B{row.batch}"[:70])
            on_row(row)

        for name in names:
            bar.update(task, description=f"{name}: building the model")
            try:
                rows += RUNNERS[name](settings, sides, _Budget(settings.budget_s), done)
            except Exception as exc:  # mamba_ssm not installed, a model that does not build: one row, keep going
                status = UNAVAILABLE if isinstance(exc, ImportError) else ERROR
                row = WorkloadRow(name, "-", 0, "-", MS, status=status, message=_first_line(exc))
                done(row)
                rows.append(row)
            bar.advance(task)
    return WorkloadReport(backend, missing, tuple(rows))
