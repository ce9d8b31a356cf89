"""Test configuration: shared fixtures and quiet TensorFlow logs."""

import os

# Set before TensorFlow is first imported by any test module: C++ log noise only.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["pipeline_fixtures"]
