"""Reliable django-cqrs replication as two reusable Django apps — `outbox` (masters) and
`replica` (replicas) — with what they use (broker links, signing, heartbeats, observability) and
their settings' defaults (`conf`); and, in `chassis`, what the services built on them share as
Django projects (settings modules, URLs, health, the API factory and JSON errors). The library
never imports the chassis."""
