"""What the Piper engine's module costs a render that does not use it: every render imports it
(the engine registry and the choice of the default voice), with or without the extra."""

from __future__ import annotations

import subprocess
import sys

LOADED = """
import sys
import audioguide.cli
print(sorted(m for m in sys.argv[1:] if m in sys.modules))
"""


def test_importing_the_cli_imports_no_package_metadata():
    # importlib.metadata (about 14 ms) is imported where a voice is looked up, not with the
    # module: without the extra, an espeak-ng render never needs it.
    unused = ["importlib.metadata", "piper", "onnxruntime", "onnx", "multiprocessing"]
    proc = subprocess.run(
        [sys.executable, "-c", LOADED, *unused], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"
