"""Which of a person's canary commands make sense in which phase.

The API refuses a command that cannot apply (409) instead of queueing it for the controller,
and the controller can check a queued command again with the same rule: the phase may have moved
between the request and the next reconciliation pass.

    pause    a canary still in progress (not paused, promoted or rolled back)
    resume   a paused canary
    abort    a canary not yet promoted or rolled back: roll back now (the rollback pull request)
    promote  a canary not yet promoted or rolled back: go to 100% with the next step pull request
    retry    a rolled-back canary: start again from the first step
"""

from __future__ import annotations

from typing import get_args

from meshgen.records import CanaryCommand, CanaryPhase

COMMANDS: tuple[CanaryCommand, ...] = get_args(CanaryCommand)
TERMINAL: frozenset[CanaryPhase] = frozenset({"promoted", "rolled-back"})


def refusal(phase: CanaryPhase, command: CanaryCommand) -> str | None:
    """Why `command` cannot apply to a canary in `phase` (with what would), or None when it can."""
    if command == "retry":
        return None if phase == "rolled-back" else (
            f"retry restarts a rolled-back canary; this one is {phase}"
            + ("" if phase in TERMINAL else " (abort it first to roll back)"))
    if command == "resume":
        return None if phase == "paused" else f"resume continues a paused canary; this one is {phase}"
    if phase in TERMINAL:
        what = "change the blueprint's canary to start a new one" if phase == "promoted" else \
            "retry starts it again"
        return f"the canary is already {phase}; {what}"
    if command == "pause" and phase == "paused":
        return "the canary is already paused; resume continues it"
    return None
