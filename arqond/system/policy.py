"""SIGHUP for CASIL: the live policy is rebuilt when the [casil] section of the file changed.

Only a changed section replaces the policy, so a reload for some other key does not undo what
an admin set with op.casil.reload.
"""

from __future__ import annotations

import logging

from arqond.config import Config, casil_policy
from arqond.core.casil import Casil

log = logging.getLogger("arqond.casil")


class CasilReloader:
    name = "casil"

    def __init__(self, casil: Casil, config: Config) -> None:
        self.casil = casil
        self.applied = casil_policy(config.values)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def reload(self, config: Config) -> None:
        policy = casil_policy(config.values)
        if policy != self.applied:
            self.applied = policy
            self.casil.set_policy(policy)
            log.info("CASIL policy replaced from the configuration (enabled=%s mode=%s)",
                     policy.enabled, policy.mode)
