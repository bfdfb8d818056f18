"""The scheduler service: places gangs of tasks on nodes and devices."""
