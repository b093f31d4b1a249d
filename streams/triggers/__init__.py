"""The trigger stage: rules that turn a person's events into timed, personalized messages.

``rules`` loads and validates the rules file, ``logic`` plans schedules and decides at
send time (with ``timing``, ``channels`` and ``render``), ``models`` holds the records.
"""
