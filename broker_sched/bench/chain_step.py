"""The cold-chain scenario's action: ``broker_sched.bench.chain_step:step``.

Importing it takes ``COLD_CHAIN_INIT_S`` seconds (default 0): the model of a runtime
whose init is heavy (loading a framework or a model), which the cold-chain paper's
containers paid for about a second each. A process runtime's worker inherits the
variable from the bench; a Docker container does not, and pays its own cold start.

A run sleeps for ``payload["steps_s"][payload["step"]]`` and returns the payload with
``step`` advanced, so one handler is every step of the chain and each result is the
next step's input. Standard library only, like every handler a worker imports.
"""

from __future__ import annotations

import os
import time
from typing import Any

INIT_ENV = "COLD_CHAIN_INIT_S"

time.sleep(float(os.environ.get(INIT_ENV, "0") or 0))


def step(payload: dict[str, Any]) -> dict[str, Any]:
    index = int(payload.get("step", 0))
    time.sleep(float(payload["steps_s"][index]))
    return {**payload, "step": index + 1}
