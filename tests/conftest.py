"""Suite-wide set-up: what every entry point of meshgen does at start-up, the tests do once."""

from __future__ import annotations

from meshgen.canary import controller

# The worker, the CLI and `meshgen up` install the canary controller before any sync; so do the
# tests that call the library's sync directly (tests/canary/test_canary_install.py checks both ways).
controller.install()
