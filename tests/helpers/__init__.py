"""Test helpers shared by several test packages (tiny models built in code)."""
