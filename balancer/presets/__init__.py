"""Ready-made configurations for well-known services."""
