"""The jobs service: protocol v2 submission and the job read model."""
