"""Jobs API: backup repositories (CRUD plus a connection test run from an appliance), backup jobs (CRUD, the
VMs they select, run now), runs and tasks (cancel; a task's events after a sequence number, for polling)
and restore points (restore as a new VM or into a folder); the signed-in user's e-mail notifications.

Viewers read; operators run, cancel and restore; administrators change repositories and jobs. Actions
queue work for a worker and answer 202 with what was queued; refusals are sentences with a stable code.
"""

from __future__ import annotations

import django_filters
from django.db.models import BooleanField, ExpressionWrapper, OuterRef, Prefetch, ProtectedError, Q, Subquery
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import generics, permissions, status, viewsets
from rest_framework import serializers as drf_serializers
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from appliances.actions import SENTENCE_ERRORS
from appliances.models import Appliance
from core import audit
from core.models import AuditEntry
from core.rbac import VIEW, can
from inventory.views.listing import count_of
from jobs import notifications, repositories, services
from jobs.api import serializers
from jobs.models import BackupJob, JobRun, Repository, RestorePoint, Task, TaskEvent
from jobs.selection import vms_of
from jobs.views.repositories import in_use


class RepositoryTestRequestSerializer(drf_serializers.Serializer):
    appliance = drf_serializers.IntegerField(required=False, help_text="Appliance to test from; default: the first "
                                                                       "ready one reached over SSH.")


@extend_schema_view(
    test=extend_schema(
        request=RepositoryTestRequestSerializer,
        responses={
            200: serializers.ProbeResultSerializer,
            400: OpenApiResponse(serializers.ErrorSerializer, description="No usable appliance, or bad settings."),
            502: OpenApiResponse(serializers.ErrorSerializer, description="The target refused or failed."),
        },
    ),
    destroy=extend_schema(
        responses={204: None, 409: OpenApiResponse(serializers.ErrorSerializer, description="Still in use.")},
    ),
)
class RepositoryViewSet(viewsets.ModelViewSet):
    """Backup repositories. Viewers read, operators test, administrators change them."""

    serializer_class = serializers.RepositorySerializer
    filterset_fields = ("kind",)
    search_fields = ("name", "host", "path")
    ordering_fields = ("name", "kind", "host", "last_test", "free_bytes", "created")
    operator_actions = ("test",)

    def get_queryset(self):
        # The secrets are never read for display: lists work even if a secret cannot be decrypted.
        stored = ExpressionWrapper(~Q(password=""), output_field=BooleanField())
        return Repository.objects.defer("password", "passphrase").annotate(
            password_stored=stored, point_count=count_of(RestorePoint, "repository"))

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        repository = self.get_object()
        jobs = list(BackupJob.objects.filter(repository=repository).order_by("name").values_list("name", flat=True))
        refusal = in_use(repository.name, jobs, RestorePoint.objects.filter(repository=repository).count())
        if not refusal:
            try:
                repository.delete()
            except ProtectedError:
                refusal = f"Repository {repository.name} is still used by backup jobs or restore points."
            else:
                return Response(status=status.HTTP_204_NO_CONTENT)
        return Response({"detail": refusal, "code": "in_use"}, status=status.HTTP_409_CONFLICT)

    @action(detail=True, methods=["post"])
    def test(self, request: Request, pk: str | None = None) -> Response:
        """Probe the repository from an appliance: reach it, write a test file, free space, repository found."""
        repository = self.get_object()
        body = RepositoryTestRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        appliance = None
        if body.validated_data.get("appliance"):
            appliance = Appliance.objects.filter(pk=body.validated_data["appliance"]).first()
            if appliance is None:
                return Response({"detail": "There is no appliance with this id: choose one from /api/appliances/.",
                                 "code": "no_appliance"}, status=status.HTTP_400_BAD_REQUEST)
        try:
            result = repositories.test_repository(repository, appliance)
        except SENTENCE_ERRORS as exc:
            audit.record(AuditEntry.Action.OPERATION, repository, message="connection test: failed")
            return Response({"detail": repository.last_test_message or str(exc), "code": getattr(exc, "code", "error")},
                            status=getattr(exc, "http_status", status.HTTP_502_BAD_GATEWAY))
        audit.record(AuditEntry.Action.OPERATION, repository, message="connection test: ok")
        return Response({"appliance": result.appliance, "reachable": True, "writable": True,
                         "free_bytes": result.free_bytes, "initialized": result.initialized,
                         "format_version": result.format_version, "passphrase_ok": result.passphrase_ok,
                         "message": result.message})


REFUSED = OpenApiResponse(serializers.ErrorSerializer, description="Refused, with the sentence that says why.")
EVENTS_LIMIT = 500
EVENTS_MAX = 2000


def _last_run(field: str) -> Subquery:
    return Subquery(JobRun.objects.filter(job=OuterRef("pk")).order_by("-created", "-pk").values(field)[:1])


@extend_schema_view(
    run=extend_schema(
        request=None,
        responses={202: OpenApiResponse(serializers.JobRunSerializer, description="The run was queued."),
                   409: OpenApiResponse(serializers.ErrorSerializer, description="The job selects no VM.")},
    ),
    vms=extend_schema(responses=serializers.JobVmSerializer(many=True)),
    destroy=extend_schema(
        responses={204: None, 409: OpenApiResponse(serializers.ErrorSerializer, description="A run is active.")},
    ),
)
class BackupJobViewSet(viewsets.ModelViewSet):
    """Backup jobs. Viewers read, operators run them, administrators create, change and delete them."""

    serializer_class = serializers.BackupJobSerializer
    filterset_fields = ("repository", "enabled", "mode")
    search_fields = ("name",)
    ordering_fields = ("name", "created", "updated")
    operator_actions = ("run",)
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return (BackupJob.objects.select_related("repository").prefetch_related("vms")
                .annotate(last_run_id=_last_run("pk"), last_run_state=_last_run("state"),
                          last_run_created=_last_run("created"), last_run_finished=_last_run("finished")))

    def get_serializer_class(self):
        if self.action == "vms":
            return serializers.JobVmSerializer
        return super().get_serializer_class()

    def destroy(self, request: Request, *args, **kwargs) -> Response:
        job = self.get_object()
        if job.runs.filter(state__in=(JobRun.State.QUEUED, JobRun.State.RUNNING)).exists():
            return Response({"detail": f"Job {job.name} has a run in progress: cancel it or wait for it to end, "
                                       "then delete the job.", "code": "job_running"},
                            status=status.HTTP_409_CONFLICT)
        job.delete()
        return Response(status=status.HTTP_204_NO_CONTENT)

    @action(detail=True, methods=["get"], filter_backends=[])
    def vms(self, request: Request, pk: str | None = None) -> Response:
        """The VMs the job selects now: chosen ones plus those its rules match (templates and appliances never)."""
        vms = vms_of(self.get_object())
        page = self.paginate_queryset(vms)
        if page is not None:
            return self.get_paginated_response(serializers.JobVmSerializer(page, many=True).data)
        return Response(serializers.JobVmSerializer(vms, many=True).data)

    @action(detail=True, methods=["post"])
    def run(self, request: Request, pk: str | None = None) -> Response:
        """Start a run now: one task per selected VM, driven by a worker. Poll /api/jobs/runs/{id}/."""
        job = self.get_object()
        run = services.start_run(job, request.user, "manual")  # NothingToDo: 409 with its sentence
        audit.record(AuditEntry.Action.OPERATION, job, message=f"run #{run.pk} started")
        return Response(serializers.JobRunSerializer(_runs().get(pk=run.pk)).data, status=status.HTTP_202_ACCEPTED)


def _runs():
    active = (Task.State.QUEUED, Task.State.RUNNING)
    return JobRun.objects.select_related("created_by").annotate(
        task_count=count_of(Task, "run"),
        tasks_succeeded=count_of(Task, "run", state=Task.State.SUCCEEDED),
        tasks_failed=count_of(Task, "run", state=Task.State.FAILED),
        tasks_active=count_of(Task, "run", state__in=active),
    )


class RunFilterSet(django_filters.FilterSet):
    class Meta:
        model = JobRun
        fields = ["job", "state", "trigger"]


@extend_schema_view(
    cancel=extend_schema(
        request=None,
        responses={202: OpenApiResponse(serializers.JobRunSerializer, description="Cancellation requested."),
                   409: OpenApiResponse(serializers.ErrorSerializer, description="The run has already ended.")},
    ),
)
class JobRunViewSet(viewsets.ReadOnlyModelViewSet):
    """Runs of backup jobs, newest first; the detail lists the run's tasks (one per VM)."""

    filterset_class = RunFilterSet
    search_fields = ("job_name", "message")
    ordering_fields = ("created", "started", "finished", "state")
    operator_actions = ("cancel",)
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        runs = _runs()
        if self.action == "retrieve":
            runs = runs.prefetch_related(Prefetch("tasks", queryset=Task.objects.select_related("created_by")
                                                  .order_by("vm_name", "pk")))
        return runs

    def get_serializer_class(self):
        if self.action == "retrieve":
            return serializers.JobRunDetailSerializer
        return serializers.JobRunSerializer

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel the run: queued tasks end at once, running ones stop their engines (snapshots are released)."""
        run = self.get_object()
        services.cancel_run(run)  # NothingToDo: 409 once it has ended
        audit.record(AuditEntry.Action.OPERATION, run.job or run, message=f"run #{run.pk}: cancel requested")
        return Response(serializers.JobRunSerializer(_runs().get(pk=run.pk)).data, status=status.HTTP_202_ACCEPTED)


class TaskFilterSet(django_filters.FilterSet):
    class Meta:
        model = Task
        fields = ["run", "kind", "state", "vm", "appliance", "repository", "restore_point"]


@extend_schema_view(
    cancel=extend_schema(
        request=None,
        responses={202: OpenApiResponse(serializers.TaskSerializer, description="Cancellation requested."),
                   409: OpenApiResponse(serializers.ErrorSerializer, description="The task has already ended.")},
    ),
    events=extend_schema(
        parameters=[
            OpenApiParameter("after", int, description="Only events after this sequence number (default 0: all)."),
            OpenApiParameter("limit", int, description=f"At most this many events (default {EVENTS_LIMIT}, "
                                                       f"at most {EVENTS_MAX})."),
        ],
        responses={200: serializers.TaskEventsSerializer, 400: OpenApiResponse(serializers.ErrorSerializer)},
    ),
)
class TaskViewSet(viewsets.ReadOnlyModelViewSet):
    """Tasks: one VM's backup in a run, or a restore. Progress is on the task; its events tell the story."""

    serializer_class = serializers.TaskSerializer
    filterset_class = TaskFilterSet
    search_fields = ("vm_name", "appliance_name", "message", "error_code")
    ordering_fields = ("created", "started", "finished", "state", "vm_name")
    operator_actions = ("cancel",)
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return Task.objects.select_related("created_by")

    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel one task; the rest of its run goes on."""
        task = self.get_object()
        services.cancel_task(task)  # NothingToDo: 409 once it has ended
        task.refresh_from_db()
        audit.record(AuditEntry.Action.OPERATION, task.run.job if task.run and task.run.job else task,
                     message=f"task #{task.pk} ({task.vm_name}): cancel requested")
        return Response(serializers.TaskSerializer(task).data, status=status.HTTP_202_ACCEPTED)

    @action(detail=True, methods=["get"], filter_backends=[], pagination_class=None)
    def events(self, request: Request, pk: str | None = None) -> Response:
        """The task's events after `after`, in order; poll with the last seq seen to follow a task live."""
        task = self.get_object()
        numbers = {}
        for name, default, high in (("after", 0, None), ("limit", EVENTS_LIMIT, EVENTS_MAX)):
            raw = request.query_params.get(name, "")
            if raw == "":
                numbers[name] = default
                continue
            if not raw.isdigit() or (name == "limit" and int(raw) < 1):
                return Response({"detail": f"{name} must be a whole number{' of 1 or more' if high else ''}, "
                                           f"e.g. {name}={'0' if name == 'after' else EVENTS_LIMIT}.",
                                 "code": "bad_parameter"}, status=status.HTTP_400_BAD_REQUEST)
            numbers[name] = min(int(raw), high) if high else int(raw)
        events = list(TaskEvent.objects.filter(task=task, seq__gt=numbers["after"]).order_by("seq")
                      [:numbers["limit"] + 1])
        more = len(events) > numbers["limit"]
        body = {"task": task.pk, "state": task.state, "phase": task.phase, "bytes_done": task.bytes_done,
                "bytes_total": task.bytes_total, "last_seq": task.last_seq, "more": more,
                "events": events[:numbers["limit"]]}
        return Response(serializers.TaskEventsSerializer(body).data)


class RestorePointFilterSet(django_filters.FilterSet):
    class Meta:
        model = RestorePoint
        fields = ["vm", "repository", "kind", "verified"]


@extend_schema_view(
    restore=extend_schema(
        request=serializers.RestoreRequestSerializer,
        responses={202: OpenApiResponse(serializers.TaskSerializer, description="The restore task was queued."),
                   400: REFUSED},
    ),
)
class RestorePointViewSet(viewsets.ReadOnlyModelViewSet):
    """The catalog of restore points, newest first. Operators restore one as a new VM or into a folder."""

    serializer_class = serializers.RestorePointSerializer
    filterset_class = RestorePointFilterSet
    search_fields = ("vm_name", "rp_id")
    ordering_fields = ("taken", "vm_name", "logical_bytes", "stored_bytes")
    operator_actions = ("restore",)
    lookup_value_regex = r"\d+"

    def get_queryset(self):
        return RestorePoint.objects.select_related("repository")

    @action(detail=True, methods=["post"])
    def restore(self, request: Request, pk: str | None = None) -> Response:
        """Queue a restore; follow it at /api/jobs/tasks/{id}/ and its events."""
        point = self.get_object()
        body = serializers.RestoreRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        task = services.start_restore(point, body.validated_data, request.user)  # RestoreRefused: 400
        audit.record(AuditEntry.Action.OPERATION, point.repository,
                     message=f"restore #{task.pk} of {point.vm_name} ({point.rp_id}) queued")
        return Response(serializers.TaskSerializer(task).data, status=status.HTTP_202_ACCEPTED)


class AnyRole(permissions.BasePermission):
    message = "You need a role (viewer, operator or administrator) to have e-mail notifications."

    def has_permission(self, request, view) -> bool:
        return can(request.user, VIEW)


class MyNotificationSettingsView(generics.RetrieveUpdateAPIView):
    """The signed-in user's e-mail notifications: failures of every job, a daily summary, the address.
    Any role reads and changes its own."""

    serializer_class = serializers.NotificationSettingsSerializer
    permission_classes = [AnyRole]
    http_method_names = ["get", "put", "patch", "head", "options"]

    def get_object(self):
        return notifications.settings_of(self.request.user)
