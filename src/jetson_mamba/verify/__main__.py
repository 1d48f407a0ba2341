"""`python -m jetson_mamba.verify [--quick]`: the verification, one plain JSON document on stdout.

What `install` runs in the target interpreter after installing: it imports neither rich nor the CLI,
only jetson_mamba (on PYTHONPATH), torch and what was just installed, so a target without rich or
packaging can be verified. `$JETSON_MAMBA_FALLBACK_PATH` (set by install) holds jetson-mamba's own
`packaging`; it goes at the end of sys.path, so the target's own copy wins. Exit status as
`jetson-mamba verify --json`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import List


def main(argv: List[str]) -> int:
    fallback = os.environ.get("JETSON_MAMBA_FALLBACK_PATH")
    if fallback:
        sys.path.append(fallback)
    os.environ.setdefault("JETSON_MAMBA_TRITON_AUTOTUNE", "0")  # as `jetson-mamba verify`
    from jetson_mamba.errors import JetsonMambaError
    from jetson_mamba.verify import report_document, require_torch, run_verify

    try:
        require_torch()
        data, code = report_document(run_verify(quick="--quick" in argv))
    except JetsonMambaError as error:
        data, code = error.to_json(), error.exit_code
    sys.stdout.write(json.dumps(data, default=str) + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
