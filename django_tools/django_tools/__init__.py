"""Shared building blocks of django-cqrs services: settings modules, health, JSON errors,
observability, and two reusable apps — `outbox` (masters) and `replica` (replicas)."""
