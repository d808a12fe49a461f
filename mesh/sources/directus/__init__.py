"""The Directus source: tail ``/activity``, read items in batches, emit change events."""
