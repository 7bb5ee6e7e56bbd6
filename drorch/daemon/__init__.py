"""`drorch daemon`: schedules, catch-up, job limits, leases, health and metrics.

schedule.py  fire times of one cron schedule (APScheduler CronTrigger), DST-safe
planner.py   the pure decision: what to run now, and why, from schedules, history and the clock
history.py   what the repository says happened (committed backups, failed runs), cached
job.py       one job, in its own process: backup (+ copy, expire), verify, expire, copy
runner.py    starts jobs within max_jobs and per-host limits, stops them on shutdown
state.py     per-source facts for /metrics and /status
http.py      /healthz, /metrics (Prometheus), /status (JSON)
logs.py      human or JSON log lines
main.py      the loop: load policies, plan, launch, reload on SIGHUP, stop on SIGTERM
"""
