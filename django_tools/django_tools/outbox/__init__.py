"""Transactional outbox for django-cqrs masters (a Django app: add `django_tools.outbox`).

- a change of a master model becomes an event in `writer.enqueue`, called by
  `signals.OutboxSignals` in the same database transaction as the change: a committed change is
  never without its event, and a write never talks to the broker;
- a relay (`manage.py outbox_relay`, `relays/`) sends the rows and marks them published only
  once the broker has them;
- `reconcile` compares the master with a replica and repairs through the same outbox.
"""
