"""Keep ultralytics offline and out of the home directory for every test here."""

from __future__ import annotations

import os
import tempfile

# ultralytics reads these once, at import: no network probes, no downloads, settings in a temp dir.
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="jm-yolo-config-"))
os.environ.setdefault("ULTRALYTICS_SKIP_REQUIREMENTS_CHECKS", "1")
