"""Settings both services share, declared as plain modules, one per concern.

A service's settings module loads its env file first, then star-imports these and adds only what
is its own (its apps, URLs, database, CQRS role, Celery queue and schedule):

```python
load_service_env("produtos", REPO_ROOT)           # .env.produtos; real variables win
from django_tools.chassis.settings.base import *     # Django, URLs, hosts, broker and Redis
from django_tools.chassis.settings.cqrs import *     # exchange, transports, retry policy, outbox
from django_tools.chassis.settings.celery import *   # CELERY_*
from django_tools.chassis.settings.logging import *  # LOGGING
from django_tools.chassis.settings.tracing import *  # TRACING (on when an OTLP endpoint is set)
```

The services' settings are read here from the environment (through `django_tools.env`), the
library's on top of their defaults in `django_tools.conf`; the rest of the code reads
`django.conf.settings`. Three variables belong to the libraries that read them and are read
where those start, not here: the OpenTelemetry SDK's `OTEL_SERVICE_NAME` (django_tools/tracing.py),
prometheus-client's `PROMETHEUS_MULTIPROC_DIR` (observability/metrics.py) and the tests'
`RABBITMQCTL` (django_tools/testing.py). CQRS.md ("Configuração") lists every variable; a test
(tests/test_docs.py) fails when one the code reads is missing from it.
"""
