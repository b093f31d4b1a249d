"""CPU of the profile stage's decode per event, in process: ``streams.profiles.stage.decode``
over the bench's events (``streams.bench.pipeline.iter_events``: pages and identifies of
N/2 people, each with a Kafka timestamp, as the harness produces them), then its two
steps apart: ``check_record`` (the contract's validation) and ``decode_envelope`` (the
reduction to a ``FoldEvent``). ``process_time``, best of 7. No services needed.

    .venv/bin/python scripts/bench_decode.py 20000

Compare two trees back to back, in the same minute:
``cd TREE && PYTHONPATH=TREE /path/.venv/bin/python /path/scripts/bench_decode.py N``."""
import gc
import sys
import time

import orjson

from streams.bench.pipeline import iter_events
from streams.events.topics import TopicKinds
from streams.events.validate import check_record
from streams.profiles.decode import decode_envelope
from streams.profiles.stage import decode
from streams.settings import load_settings

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
s = load_settings()
kinds = TopicKinds.for_settings(s)
topic = {"view": s.topic(s.topic_view), "identify": s.topic(s.topic_identify),
         "click": s.topic(s.topic_click)}
recs = [(topic[kind], 0, i, k, v, 1_772_000_000.0 + i * 0.01)
        for i, (k, v, kind) in enumerate(iter_events(N // 2, N))]
checked = [check_record(*r[:5], kinds=kinds, appended_at=r[5]) for r in recs]
gc.collect()
gc.freeze()
gc.set_threshold(50_000, 20, 100)  # as the fold processes (streams.pipeline.tuning)


def best(fn, reps=7):
    out = []
    for _ in range(reps):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return min(out) / N * 1e6


steps = {
    "decode (the stage's)": lambda: [decode(r, kinds) for r in recs],
    "  orjson.loads": lambda: [orjson.loads(r[4]) for r in recs],
    "  check_record": lambda: [check_record(*r[:5], kinds=kinds, appended_at=r[5])
                               for r in recs],
    "  decode_envelope": lambda: [decode_envelope(c[0], c[1]) for c in checked],
}
for name, fn in steps.items():
    print(f"{name:24} {best(fn):6.2f} us/event")
