"""The stage runner: what every stage that consumes the event topics shares.

A stage (``streams.pipeline.stage.Stage``) says how to decode one raw record (a valid
event or the reason it is not one) and how to write a batch of events in one
transaction. The runner owns the rest: taking batches from Faust, holding each message
until its batch is stored, the fold processes, retries by failure class
(``policy``), isolating and dead-lettering what cannot be stored, and the systemic stop.
"""
