"""A warm render imports only what it uses: every module costs each render its import time."""

from __future__ import annotations

import os
import subprocess
import sys

from audioguide import cli, programme

# Not needed by a render whose every cue is in the cache: the feed's and the server's machinery
# (xml.sax.saxutils alone pulls in urllib.request and http.client), the programmes', the worker
# processes of a cold Piper render, Piper, onnxruntime and onnx themselves, scipy.signal and
# scipy.ndimage (the loudness filter and the limiter are numpy), pyloudnorm (the tests'
# reference), espeak's driver, Pillow (the cover comes from its memo), and importlib.metadata
# (Piper's voice packages are searched for only when the voice may be one of them).
UNUSED_WHEN_WARM = (
    "urllib.request",
    "http.client",
    "http.server",
    "xml.sax",
    "xml.etree",
    "ssl",
    "multiprocessing",
    "concurrent.futures.process",
    "piper",
    "onnxruntime",
    "onnx",
    "scipy.signal",
    "scipy.ndimage",
    "pyloudnorm",
    "pyttsx3",
    "qrcode",
    "audioguide.server",
    "audioguide.export.feed",
    "audioguide.programme",
    "PIL",
    "numpy.ma",  # np.median's first call imports it
    "numpy.random",  # the breath tone draws nothing (about 17 ms); only noise and beds do
    "importlib.metadata",
)

RENDER_AND_LIST_MODULES = """
import atexit, sys
unused = sys.argv.pop(1).split(",")
atexit.register(lambda: print("loaded:", [m for m in unused if m in sys.modules]))
sys.argv[0] = "audioguide"
from audioguide.__main__ import main
main()
"""


def test_a_warm_render_imports_no_module_it_does_not_use(tmp_path):
    env = {**os.environ, "AUDIOGUIDE_VOICE": "gmw/en-us", "PYTHONDONTWRITEBYTECODE": "1"}
    render = ["render", "back-pain-quick", "-o", str(tmp_path / "out"), "-q", "--force"]
    cold = [sys.executable, "-m", "audioguide", *render]
    subprocess.run(cold, env=env, check=True, capture_output=True, cwd=tmp_path)  # fills the cache
    warm = [sys.executable, "-c", RENDER_AND_LIST_MODULES, ",".join(UNUSED_WHEN_WARM), *render]
    proc = subprocess.run(warm, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "loaded: []"
    assert (tmp_path / "out" / "back-pain-quick").is_dir()  # it did render


def test_the_clis_limits_of_a_programme_are_the_programmes():
    # Written again in cli.py so that a render need not import programme.py for them.
    assert (cli.MAX_WEEKS, cli.DAYS_IN_WEEK) == (programme.MAX_WEEKS, programme.DAYS_IN_WEEK)


def test_the_command_collects_garbage_again_once_its_libraries_are_imported():
    # Imported with the collector off (about 25 ms less), and what they made frozen; a
    # command that ran on with it off would keep every cycle it made, as long as it runs
    # (`audioguide serve` runs for days).
    harness = (
        "import gc, sys\n"
        "sys.argv[0] = 'audioguide'\n"
        "import audioguide.cli as cli\n"
        "seen = []\n"
        "real = cli.cli\n"
        "def probe(*args, **kwargs):\n"
        "    seen.append((gc.isenabled(), gc.get_freeze_count() > 0))\n"
        "    return real(*args, **kwargs)\n"
        "cli.cli = probe\n"
        "from audioguide.__main__ import main\n"
        "try:\n"
        "    main()\n"
        "finally:\n"
        "    print('collector:', seen)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", harness, "--version"], capture_output=True, text=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "collector: [(True, True)]"


def test_the_command_leaves_what_is_left_at_exit_to_the_process_ending():
    # Python's last collection at exit took about 0.05 s of CPU after a render, for objects the
    # process frees anyway as it ends: the command freezes them instead.
    harness = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen:', gc.get_freeze_count() > 0))\n"
        "sys.argv[0] = 'audioguide'\n"
        "from audioguide.__main__ import main\n"
        "main()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", harness, "list"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "frozen: True"


# Imported where they are first used, not in the serial start of every command: mutagen when
# a file is tagged (a render's worker, at its first track's end, beside the other's encoder).
IMPORTED_WHEN_FIRST_USED = ("mutagen", "audioguide.export.feed", "audioguide.server")


def test_the_cli_starts_without_the_modules_a_render_needs_only_later():
    listed = ",".join(IMPORTED_WHEN_FIRST_USED)
    harness = (
        f"import sys, audioguide.cli\nprint([m for m in {listed.split(',')!r} if m in sys.modules])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", harness], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"
