"""`uv run apis bench`: stock django-cqrs, this project's pipeline and the Celery-task pipeline,
side by side in one run, with the broker's own ceiling measured in the same run.

Each pipeline (`pipelines`: one type per variant) gets fresh databases (SQLite files in a
temporary folder, or new PostgreSQL databases), an exchange and queues of its own, and the same
work: N products created through the master's ORM by one writer process. Each is run `--runs`
times (3): the table shows the median and the spread (min–max), the JSON object the medians.

Measured per run: end-to-end messages per second (first write → last row on the replica) and the
lag of each message (row written on the replica − commit on the master; a database trigger
stamps each replica row, the writer stamps each commit), p50 and p99. Then a steady load at a
fixed rate (its first second of writes is a warm-up, left out of the lags: the cold start of
freshly started processes is not a steady state), and a REST burst against the real `apis up`
processes (`burst`).
"""
