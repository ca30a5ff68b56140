"""Settings both services share, declared as plain modules, one per concern.

A service's settings module loads its env file first, then star-imports these and adds only what
is its own (its apps, URLs, database, CQRS role, Celery queue and schedule):

```python
load_service_env("produtos", REPO_ROOT)           # .env.produtos; real variables win
from django_tools.settings.base import *          # Django, URLs, hosts, broker and Redis URLs
from django_tools.settings.cqrs import *          # exchange, transports, retry policy, outbox
from django_tools.settings.celery import *        # CELERY_*
from django_tools.settings.logging import *       # LOGGING
```

Every environment variable is read here (through `django_tools.env`), nowhere else in the
library: the rest of the code reads `django.conf.settings`. CQRS.md ("Configuração") lists every
variable; a test fails when one read here is missing from it.
"""
