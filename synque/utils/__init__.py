"""Small helpers shared by several packages (no synque imports beyond the error type)."""
