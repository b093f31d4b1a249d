"""The demo storefront (``/demo``): a shop page instrumented with Segment's browser SDK,
fetched from npm into the cache by ``streams up`` (``sdk.py``), routes in ``views.py``,
what the page shows its visitor in ``reads.py``, the page itself in ``static/``."""
