"""Import TensorFlow without its start-up chatter on stderr.

TF 2.21 prints INFO lines about oneDNN, CPU instruction sets and the CUDA probe from
C++ before ``TF_CPP_MIN_LOG_LEVEL`` takes effect. On a CPU machine these read like
errors ("failed call to cuInit") and bury the command's own output. Only those known
lines are dropped; anything else TensorFlow writes during import is passed through.
"""

from __future__ import annotations

import os
import sys
import tempfile

_NOISE = (
    "WARNING: All log messages before absl::InitializeLog()",
    "oneDNN custom operations are on",
    "Could not find cuda drivers",
    "failed call to cuInit",
    "To enable the following instructions",
    "rebuild TensorFlow with the appropriate compiler flags",
    "TF-TRT Warning",
    "Unable to register cu",
    "computation placer already registered",
)


def import_tensorflow_quietly() -> None:
    if "tensorflow" in sys.modules:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            if "TF_CONFIG" not in os.environ:
                # The CUDA probe logs here, not at import. Multi-worker runs skip it: their
                # strategy must be created before TensorFlow's context is initialised.
                tf.config.list_physical_devices("GPU")
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not any(noise in line for noise in _NOISE):
                    print(line, file=sys.stderr)
