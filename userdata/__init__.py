"""Contextualisation: rendering each machine's user-data (the user-data issue)."""
