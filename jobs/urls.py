from django.urls import path

from jobs import views

app_name = "jobs"

urlpatterns = [
    path("", views.job_list, name="job_list"),
    path("add/", views.job_add, name="job_add"),
    path("vm-choices/", views.job_vm_choices, name="job_vm_choices"),
    path("<int:pk>/", views.job_detail, name="job_detail"),
    path("<int:pk>/edit/", views.job_edit, name="job_edit"),
    path("<int:pk>/delete/", views.job_delete, name="job_delete"),
    path("<int:pk>/run/", views.job_run, name="job_run"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/running/", views.running_fragment, name="running_fragment"),
    path("history/", views.history, name="history"),
    path("history/data/", views.history_data, name="history_data"),
    path("<int:pk>/history/", views.history_panel, name="history_panel"),
    path("runs/<int:pk>/", views.run_detail, name="run_detail"),
    path("runs/<int:pk>/cancel/", views.run_cancel, name="run_cancel"),
    path("tasks/<int:pk>/", views.task_detail, name="task_detail"),
    path("tasks/<int:pk>/cancel/", views.task_cancel, name="task_cancel"),
    path("restore-points/", views.restore_point_list, name="restore_point_list"),
    path("restore-points/<int:pk>/restore/", views.restore_point_restore, name="restore_point_restore"),
    path("restore-points/host-choices/", views.restore_host_choices, name="restore_host_choices"),
    path("notifications/", views.notification_settings, name="notification_settings"),
    path("repositories/", views.repository_list, name="repository_list"),
    path("repositories/add/", views.repository_add, name="repository_add"),
    path("repositories/<int:pk>/", views.repository_detail, name="repository_detail"),
    path("repositories/<int:pk>/edit/", views.repository_edit, name="repository_edit"),
    path("repositories/<int:pk>/delete/", views.repository_delete, name="repository_delete"),
    path("repositories/<int:pk>/test/", views.repository_test, name="repository_test"),
]
