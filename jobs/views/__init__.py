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
from jobs.views.repositories import (
    repository_add,
    repository_delete,
    repository_detail,
    repository_edit,
    repository_list,
    repository_test,
)
from jobs.views.restores import restore_host_choices, restore_point_list, restore_point_restore

__all__ = ["job_add", "job_delete", "job_detail", "job_edit", "job_list", "job_run", "job_vm_choices",
           "repository_add", "repository_delete", "repository_detail", "repository_edit", "repository_list",
           "repository_test", "restore_host_choices", "restore_point_list", "restore_point_restore", "run_cancel",
           "run_detail", "task_cancel", "task_detail"]
