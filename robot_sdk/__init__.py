"""Predecessor-compatible alias of tidybot_sdk (filled in by the SDK issue)."""
