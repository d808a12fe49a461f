"""Source adapters: capture every change in a source system as change events."""
