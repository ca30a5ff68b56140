"""Transactional outbox for django-cqrs masters.

Every change of a master model writes its django-cqrs event into the `OutboxEvent` table in the
same database transaction as the change (`events.enqueue`, called by `signals.OutboxSignals`). A
relay process (`manage.py outbox_relay`, see `relay`) publishes the table to RabbitMQ with
publisher confirms and marks rows published only once the broker has them. A write never talks
to the broker, and a committed change is never without its event.
"""
