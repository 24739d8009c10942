"""Websocket routes of runs and tasks (live progress)."""

from django.urls import path

from jobs.consumers import RunConsumer, RunsConsumer, TaskConsumer

websocket_urlpatterns = [
    path("ws/jobs/runs/", RunsConsumer.as_asgi(), name="ws-jobs-runs"),
    path("ws/jobs/runs/<int:pk>/", RunConsumer.as_asgi(), name="ws-jobs-run"),
    path("ws/jobs/tasks/<int:pk>/", TaskConsumer.as_asgi(), name="ws-jobs-task"),
]
