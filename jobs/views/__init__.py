"""Portal views of the jobs app."""

from jobs.views.backup import (
    job_add,
    job_delete,
    job_detail,
    job_edit,
    job_list,
    job_run,
    job_vm_choices,
    run_cancel,
    run_detail,
    task_cancel,
    task_detail,
)
from jobs.views.history import history, history_data, history_panel
from jobs.views.notifications import notification_settings
from jobs.views.repositories import (
    repository_add,
    repository_delete,
    repository_detail,
    repository_edit,
    repository_list,
    repository_test,
)
from jobs.views.restores import restore_host_choices, restore_point_list, restore_point_restore
from jobs.views.runs import run_list, running_fragment

__all__ = ["job_add", "job_delete", "job_detail", "job_edit", "job_list", "job_run", "job_vm_choices",
           "notification_settings", "repository_add", "repository_delete", "repository_detail", "repository_edit",
           "repository_list",
           "repository_test", "restore_host_choices", "restore_point_list", "restore_point_restore", "run_cancel",
           "run_detail", "task_cancel", "task_detail", "history", "history_data", "history_panel", "run_list",
           "running_fragment"]
