"""Portal pages of backup repositories: list, add/edit/delete, and a connection test run from an appliance.

Viewers see, operators also test, administrators also change the configuration. Every change goes
through a model save, so the audit log records it; a test is recorded as an operation.
"""

from __future__ import annotations

import logging

import django_filters
from django.contrib import messages
from django.db.models import ProtectedError, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from appliances.actions import SENTENCE_ERRORS
from appliances.models import Appliance
from core import audit
from core.models import AuditEntry
from core.rbac import ADMINISTER, OPERATE, VIEW
from core.views import role_required
from inventory.views.listing import ListSpec, count_of, render_list
from jobs import repositories
from jobs.forms import RepositoryForm
from jobs.models import BackupJob, Repository, RestorePoint

log = logging.getLogger(__name__)

# Repositories load without their secrets: they are decrypted only where the engine needs them.
SHOWN = Repository.objects.defer("password", "passphrase")


class RepositoryFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")

    class Meta:
        model = Repository
        fields = ["kind"]

    def search(self, queryset, name, value):
        return queryset.filter(Q(name__icontains=value) | Q(host__icontains=value) | Q(path__icontains=value))


REPOSITORIES = ListSpec(
    template="jobs/repository_list.html",
    rows_template="jobs/_repository_rows.html",
    filterset_class=RepositoryFilterSet,
    sorts={
        "name": ("name",),
        "kind": ("kind", "name"),
        "where": ("host", "path"),
        "tested": ("last_test",),
        "free": ("free_bytes",),
        "points": ("point_count",),
    },
)


@role_required(VIEW)
def repository_list(request: HttpRequest) -> HttpResponse:
    rows = SHOWN.annotate(point_count=count_of(RestorePoint, "repository"), job_count=count_of(BackupJob, "repository"))
    return render_list(request, REPOSITORIES, rows, kinds=Repository.Kind.choices)


@role_required(VIEW)
def repository_detail(request: HttpRequest, pk: int) -> HttpResponse:
    repository = get_object_or_404(SHOWN, pk=pk)
    context = {
        "repository": repository,
        "jobs": BackupJob.objects.filter(repository=repository).order_by("name"),
        "point_count": RestorePoint.objects.filter(repository=repository).count(),
        "appliances": Appliance.objects.filter(state=Appliance.State.READY).order_by("name"),
        "history": AuditEntry.objects.filter(object_type=Repository._meta.label, object_id=str(repository.pk))[:10],
    }
    return render(request, "jobs/repository_detail.html", context)


@role_required(ADMINISTER)
def repository_add(request: HttpRequest) -> HttpResponse:
    form = RepositoryForm(request.POST or None, initial={"kind": request.GET.get("kind", "local")})
    if request.method == "POST" and form.is_valid():
        repository = form.save()
        messages.success(request, f"Repository {repository.name} added. Test it from an appliance before the first "
                                  "backup.")
        return redirect("jobs:repository_detail", repository.pk)
    return render(request, "jobs/repository_form.html", {"form": form})


@role_required(ADMINISTER)
def repository_edit(request: HttpRequest, pk: int) -> HttpResponse:
    # deferred: this page must work when the stored secrets cannot be decrypted, to enter them again
    repository = get_object_or_404(SHOWN, pk=pk)
    form = RepositoryForm(request.POST or None, instance=repository)
    if request.method == "POST" and form.is_valid():
        form.save()
        messages.success(request, f"Repository {repository.name} saved.")
        return redirect("jobs:repository_detail", repository.pk)
    return render(request, "jobs/repository_form.html", {"form": form, "repository": repository})


@role_required(ADMINISTER)
def repository_delete(request: HttpRequest, pk: int) -> HttpResponse:
    repository = get_object_or_404(SHOWN, pk=pk)
    jobs = list(BackupJob.objects.filter(repository=repository).order_by("name").values_list("name", flat=True))
    point_count = RestorePoint.objects.filter(repository=repository).count()
    refusal = in_use(repository.name, jobs, point_count)
    if request.method == "POST":
        if not refusal:
            name = repository.name
            try:
                repository.delete()
            except ProtectedError:
                refusal = f"Repository {name} is still used: reload the page to see by what."
            else:
                messages.success(request, f"Repository {name} was deleted from VA Fleet; its files on the target "
                                          "were left as they are.")
                return redirect("jobs:repository_list")
        messages.error(request, refusal)
        return redirect("jobs:repository_detail", repository.pk)
    return render(request, "jobs/repository_confirm_delete.html",
                  {"repository": repository, "refusal": refusal, "jobs": jobs, "point_count": point_count})


def in_use(name: str, jobs: list[str], point_count: int) -> str:
    """Why a repository cannot be deleted ('' when it can)."""
    if jobs:
        return (f"Repository {name} cannot be deleted: backup job{'s' if len(jobs) > 1 else ''} "
                f"{', '.join(jobs)} use{'' if len(jobs) > 1 else 's'} it. Move those jobs to another repository or "
                "delete them first.")
    if point_count:
        return (f"Repository {name} cannot be deleted: the catalog lists {point_count} restore point"
                f"{'s' if point_count != 1 else ''} in it, which could no longer be restored from VA Fleet.")
    return ""


@require_POST
@role_required(OPERATE)
def repository_test(request: HttpRequest, pk: int) -> HttpResponse:
    """Runs the engine's probe on an appliance (synchronously, bounded) and shows the sentence."""
    repository = get_object_or_404(SHOWN, pk=pk)  # the secrets are read (and may fail) within the test
    appliance = None
    if request.POST.get("appliance"):
        appliance = Appliance.objects.filter(pk=request.POST["appliance"]).first()
    context = run_test(repository, appliance)
    audit.record(AuditEntry.Action.OPERATION, repository,
                 message=f"connection test: {'ok' if context['ok'] else 'failed'}")
    if request.htmx:
        return render(request, "jobs/_repository_test.html", context)
    if context["ok"]:
        messages.success(request, context["result"].message)
    else:
        messages.error(request, context["error"])
    return redirect("jobs:repository_detail", repository.pk)


def run_test(repository: Repository, appliance: Appliance | None) -> dict:
    context = {"repository": repository}
    try:
        context.update(ok=True, result=repositories.test_repository(repository, appliance))
    except SENTENCE_ERRORS as exc:
        # The stored sentence also says which appliance saw the failure.
        context.update(ok=False, error=repository.last_test_message or str(exc), code=getattr(exc, "code", ""))
    except Exception as exc:  # a bug or an unexpected reply: say so instead of a bare server error
        log.exception("test of repository %s failed", repository)
        context.update(ok=False, error=f"The test failed unexpectedly ({exc}); see the server log for details.")
    return context
