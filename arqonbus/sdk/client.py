"""``arqonbus.sdk.client`` is the module arqond.sdk itself, not a copy of its names.

Tests written for ArqonBus patch names in this module, such as ``websockets.connect`` or
``websockets`` itself; only when this module is arqond.sdk does such a patch reach the client.
"""

import sys

from arqond import sdk

sys.modules[__name__] = sdk
