import time
from tests.faults._harness import Workload, WorkloadThread, check_end_state
from tests.integration.conftest import wait_for

def test_probe(pipeline):
    t0 = time.monotonic()
    pipeline.start_worker()
    pipeline.start_sink()
    wl = Workload(workflows=400, execs=16)
    print("total", wl.total)
    th = WorkloadThread(pipeline, wl, rate=100000).start()
    th.join(120)
    print("emitted", th.emitted, "in", th.finished_at - th.started_at)
    t1 = time.monotonic()
    last = 0
    while pipeline.count("lineage_entries") < wl.total:
        n = pipeline.count("lineage_entries")
        print(round(time.monotonic() - t1, 1), n)
        time.sleep(2)
        assert time.monotonic() - t1 < 200
    print("drained in", time.monotonic() - t1, "total", time.monotonic() - t0)
    t2 = time.monotonic()
    st = check_end_state(pipeline, th)
    print("check", time.monotonic() - t2, st.violations, st.raw_rows)
