"""oxis."""
