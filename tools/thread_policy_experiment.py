#!/usr/bin/env python3
"""Thread-policy experiment behind docs/performance.md's fifth-session table (not a supported mode): the
e2e bench with N torch threads under SCHED_FIFO 20, optionally torch's OpenMP workers made SCHED_FIFO too,
and the LSL player process raised to SCHED_FIFO PLAYER_PRIO (0 = normal). Needs root. Set OMP_WAIT_POLICY in
the environment for the passive-worker row.

    LSLAPICFG=poyo_rt/stream/loopback.cfg python tools/thread_policy_experiment.py THREADS RT_WORKERS(0|1) PLAYER_PRIO SECONDS
    e.g.  ... 1 0 0 120   |   OMP_WAIT_POLICY=PASSIVE ... 2 1 30 120   |   ... 1 0 30 120   |   ... 2 1 30 120
"""
import json
import multiprocessing
import os
import sys
import threading
import time

def main():
    import torch
    threads = int(sys.argv[1]); rt_workers = sys.argv[2] == "1"; player_rt = int(sys.argv[3]); dur = float(sys.argv[4])
    torch.set_num_threads(threads)
    a = torch.randn(512, 512)
    for _ in range(5): a @ a  # creates the OpenMP team
    omp_tids = set(int(t) for t in os.listdir("/proc/self/task")) - {threading.get_native_id()}
    print("omp threads", omp_tids, "OMP_WAIT_POLICY", os.environ.get("OMP_WAIT_POLICY"), flush=True)
    from poyo_rt.runtime import threads as th
    orig_enter = th.RealtimePriority.__enter__
    def enter(self):
        r = orig_enter(self)
        if rt_workers and self.priority:
            for tid in omp_tids:
                os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(self.priority))
        return r
    th.RealtimePriority.__enter__ = enter
    def player_prio():
        done = set()
        while True:
            for c in multiprocessing.active_children():
                if c.pid not in done and player_rt:
                    try:
                        os.sched_setscheduler(c.pid, os.SCHED_FIFO, os.sched_param(player_rt)); done.add(c.pid)
                        print("player", c.pid, "FIFO", player_rt, flush=True)
                    except Exception as e:
                        print("player prio failed", e)
            time.sleep(0.5)
    threading.Thread(target=player_prio, daemon=True).start()
    from poyo_rt.bench.e2e import run_e2e_bench
    r = run_e2e_bench("poyo_1.3M", duration_s=dur, baseline_duration_s=0, threads=threads, realtime_priority=20, progress=lambda s: None)
    p = r["phases"][-1]
    print(json.dumps({k: p[k] for k in ("threads", "deadline_misses", "late_ticks", "skipped_ticks", "ticks_published", "spikes_pushed", "spikes_taken_in")}))
    print("receipt", {k[:-3] + "_ms": round(v / 1e3, 2) for k, v in p["receipt_us"].items() if k.endswith("_us")})
    print("forward", {k[:-3] + "_ms": round(v / 1e3, 2) for k, v in p["forward_us"].items() if k.endswith("_us")})

if __name__ == '__main__':
    main()
