from decimal import Decimal

from dj_cqrs.mixins import ReplicaMixin
from django.core.validators import MinValueValidator
from django.db import models

from django_tools.replica.managers import ConvergentReplicaManager


class BookReplica(ReplicaMixin):
    """The replica of dj_master's Book (same CQRS_ID, same field names), applied only through
    django_tools.replica (its `cqrs` manager): revisions, tombstones, validation by its fields."""

    CQRS_ID = "book"

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.BigIntegerField(primary_key=True)
    # Not unique: the master owns that rule, and a swap of two values may arrive in any order.
    isbn = models.CharField(max_length=64, db_index=True)
    title = models.CharField(max_length=200)
    summary = models.TextField(blank=True, default="")
    price = models.DecimalField(
        max_digits=12, decimal_places=2, validators=[MinValueValidator(Decimal("0"))]
    )
    copies = models.IntegerField(default=0, validators=[MinValueValidator(0)])
    in_print = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.isbn} {self.title} (rev {self.cqrs_revision})"


# --- models that use django-cqrs's replica hooks (applied through them) ------------------------


class AuthorMapped(ReplicaMixin):
    """`CQRS_MAPPING`: the master's field names differ from the replica's."""

    CQRS_ID = "author_mapped"
    CQRS_MAPPING = {"id": "id", "name": "full_name", "books": "book_count"}

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.BigIntegerField(primary_key=True)
    full_name = models.CharField(max_length=100)
    book_count = models.IntegerField(default=0, validators=[MinValueValidator(0)])


class AuthorCustom(ReplicaMixin):
    """`CQRS_CUSTOM_SERIALIZATION` with its own `cqrs_create` / `cqrs_update`: the master sends a
    nested profile the model unpacks itself."""

    CQRS_ID = "author_custom"
    CQRS_CUSTOM_SERIALIZATION = True

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.BigIntegerField(primary_key=True)
    full_name = models.CharField(max_length=100)
    city = models.CharField(max_length=100, blank=True, default="")

    @classmethod
    def cqrs_create(cls, sync, mapped_data, previous_data=None, meta=None):
        return cls.objects.create(id=mapped_data["id"], **cls._unpack(mapped_data))

    def cqrs_update(self, sync, mapped_data, previous_data=None, meta=None):
        for name, value in self._unpack(mapped_data).items():
            setattr(self, name, value)
        self.save()
        return self

    @staticmethod
    def _unpack(data):
        profile = data["profile"]
        return {
            "full_name": f"{profile['first']} {profile['last']}",
            "city": profile.get("city", ""),
            "cqrs_revision": data["cqrs_revision"],
            "cqrs_updated": data["cqrs_updated"],
        }


#: What the hooks of AuthorHooked saw, in order (the tests read and clear it).
HOOK_CALLS: list[tuple] = []


class AuthorHooked(ReplicaMixin):
    """Its own `cqrs_save` and `cqrs_delete` (calling django-cqrs's), `CQRS_META`, and
    `post_save` / `post_delete` receivers (connected in the app's ready())."""

    CQRS_ID = "author_hooked"
    CQRS_META = True

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.BigIntegerField(primary_key=True)
    full_name = models.CharField(max_length=100)

    @classmethod
    def cqrs_save(cls, master_data, previous_data=None, sync=False, meta=None):
        HOOK_CALLS.append(("cqrs_save", master_data["id"], master_data["cqrs_revision"], meta))
        return super().cqrs_save(master_data, previous_data=previous_data, sync=sync, meta=meta)

    @classmethod
    def cqrs_delete(cls, master_data, meta=None):
        HOOK_CALLS.append(("cqrs_delete", master_data["id"], master_data["cqrs_revision"], meta))
        return super().cqrs_delete(master_data, meta=meta)


# --- a replica model in another database -------------------------------------------------------


class BookElsewhere(ReplicaMixin):
    """A replica model that the test settings' router sends to the `elsewhere` database: apply
    must open its transaction, take its row locks and keep its tombstones and state there."""

    CQRS_ID = "book_elsewhere"
    DATABASE = "elsewhere"

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.BigIntegerField(primary_key=True)
    title = models.CharField(max_length=200)


# --- a replica model with django-cqrs's retry hooks of its own ---------------------------------

#: What the retry hooks of BookPicky were asked, in order (the tests read and clear it).
RETRY_HOOK_CALLS: list[tuple] = []
#: BookPicky's answer to get_cqrs_retry_delay (the tests change it).
PICKY_DELAY = {"seconds": 1}


class BookPicky(ReplicaMixin):
    """`should_retry_cqrs`: never retries a failure that says it is final. `get_cqrs_retry_delay`:
    its own wait before any other retry (as a stock django-cqrs replica model defines them)."""

    CQRS_ID = "book_picky"

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.BigIntegerField(primary_key=True)
    title = models.CharField(max_length=200)

    @staticmethod
    def should_retry_cqrs(current_retry, exception=None):
        RETRY_HOOK_CALLS.append(("should_retry_cqrs", current_retry, str(exception)))
        return "final" not in str(exception)

    @staticmethod
    def get_cqrs_retry_delay(current_retry):
        RETRY_HOOK_CALLS.append(("get_cqrs_retry_delay", current_retry))
        return PICKY_DELAY["seconds"]


# --- a replica model keyed by a UUID ----------------------------------------------------------


class GadgetUuid(ReplicaMixin):
    """A replica model whose key is not an integer: on SQLite a UUID is stored as 32 hex
    characters and read back through the backend's converter, so apply's state read must map
    it to the same `uuid.UUID` as the message's key."""

    CQRS_ID = "gadget_uuid"

    objects = models.Manager()
    cqrs = ConvergentReplicaManager()

    id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=100)
    # A None on the master is a NULL here (record_last and the upsert send it as a parameter).
    weight = models.IntegerField(null=True, blank=True, default=None)
