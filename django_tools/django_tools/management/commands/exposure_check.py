"""`manage.py exposure_check`: what this service still has as public defaults, in one line;
exit 1 when anything is (run by `apis up --host <not loopback>` after the migrations, for the
admin accounts it cannot see from outside)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from django_tools import exposure


class Command(BaseCommand):
    help = "Say what must be set before this service is reachable from other machines."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--admins-only",
            action="store_true",
            help="check only the admin accounts (default passwords), not the environment",
        )

    def handle(self, *args, admins_only: bool = False, **options) -> None:
        if admins_only:
            problem = exposure.admin_problem(exposure.admins_with_default_passwords())
            problems = [problem] if problem else []
        else:
            problems = exposure.service_problems(admins=True)
        if problems:
            raise CommandError(", ".join(problems), returncode=1)
        self.stdout.write("ok: nothing public by default")
