"""ArqonBus's protocol import path; only ``ids`` is client-side."""
