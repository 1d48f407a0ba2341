"""Wheel archives: a manifest per directory, explained selection, safe install, a pip index.

An archive is a directory of wheels plus `manifest.json` (see `manifest`). Public API:

- `add_wheel(wheel, archive, provenance=None, built_on=None) -> WheelRecord`: check a built
  wheel (file name vs METADATA/WHEEL, zip integrity), read its facts (sha256, size, tags, GPU
  archs from its fatbins, torch/C++ ABI/CUDA from its local version label such as
  `2.2.5+cu130.torch2.11.sm90` or from its libraries), copy it into `archive` and record it with
  `provenance` (free-form JSON: source, patches, build_command, ...) and `built_on` (a
  MachineInfo or a dict). `jetson-mamba build --archive DIR` calls this::

      from jetson_mamba.archive import add_wheel
      add_wheel(wheel_path, archive_dir, provenance={"source": "sdists/mamba_ssm-2.2.5.tar.gz",
                "patches": ["arch-list", "cuda13-cub"], "build_command": "pip wheel ..."},
                built_on=machine_info)

- `open_directory(dir)`: the manifest of a directory (scanned from the wheels when it has none).
- `verify_archive(dir) -> List[str]`: every problem of an archive (hashes, missing/extra files, malformed entries).
- `select_wheels(target, manifest, digests) -> Selection`: the pure choice, one reason per rejection.
- `install_from_archive(...) -> InstallReport`: select, install with `pip --no-deps`, add missing runtime
  dependencies (never torch), patch, verify, roll back on any failure.
- `write_index(dir)` (PEP 503 HTML + PEP 691 JSON) and `serve(dir, host, port)`.
"""

from __future__ import annotations

from jetson_mamba.archive.manifest import SCHEMA_VERSION, Manifest, WheelRecord, load_manifest
from jetson_mamba.archive.store import add_wheel, describe_machine, open_directory

__all__ = ["SCHEMA_VERSION", "Manifest", "WheelRecord", "add_wheel", "describe_machine", "load_manifest",
           "open_directory"]
