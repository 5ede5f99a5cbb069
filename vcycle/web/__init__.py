"""The HTTPS endpoint."""
