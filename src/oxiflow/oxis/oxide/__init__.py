"""oxide."""
