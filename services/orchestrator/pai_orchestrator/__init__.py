"""The orchestrator service: FrameworkController semantics over the bus."""
