"""Identity resolution: which profile an event's identifiers belong to."""
