"""The person page: one person across every device and channel (``/people``)."""
