import uuid

from django.db import models


def _new_incarnation() -> str:
    return uuid.uuid4().hex


class Tombstone(models.Model):
    """A replicated row that the master deleted, with the revision of the delete.

    A save of the same row at or below that revision is a stale message (a redelivery, another
    worker's late message) and must not bring the row back. Tombstones are invisible to the
    replica's own model and API.
    """

    cqrs_id = models.CharField(max_length=64)
    instance_pk = models.CharField(max_length=64)
    cqrs_revision = models.IntegerField()
    deleted_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["cqrs_id", "instance_pk"], name="tombstone_unique")
        ]

    def __str__(self) -> str:
        return f"{self.cqrs_id} {self.instance_pk} deleted at revision {self.cqrs_revision}"


class ReplicaState(models.Model):
    """The last event applied for each CQRS_ID: what the status page and the lag estimate read."""

    cqrs_id = models.CharField(max_length=64, unique=True)
    instance_pk = models.CharField(max_length=64)
    revision = models.IntegerField()
    signal_type = models.CharField(max_length=16)
    master_updated_at = models.DateTimeField(null=True)
    applied_at = models.DateTimeField()
    correlation_id = models.CharField(max_length=128, blank=True, default="")
    #: +1 with every transaction that changed rows of this CQRS_ID: caches of the replica's
    #: reads key on it, so a committed change is never answered from an older cache entry.
    version = models.BigIntegerField(default=0)
    #: New with every database: a recreated replica never meets cache entries of an older one.
    incarnation = models.CharField(max_length=32, default=_new_incarnation)

    def __str__(self) -> str:
        return f"{self.cqrs_id}: {self.instance_pk} rev {self.revision} at {self.applied_at}"
