"""The trace simulator: replays a workload through the scheduler's pure cores (``pai-sim``)."""
