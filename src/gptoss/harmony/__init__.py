"""Harmony: conversation building, rendering and a tolerant streaming parser (SPEC §4)."""
