"""The marketplace service: shared job templates, owned in its own database (``pai_marketplace``)."""
