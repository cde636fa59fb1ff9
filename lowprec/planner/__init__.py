"""SNIP-style precision planner."""
