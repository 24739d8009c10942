"""Portal views of the jobs app."""

from jobs.views.repositories import (
    repository_add,
    repository_delete,
    repository_detail,
    repository_edit,
    repository_list,
    repository_test,
)

__all__ = ["repository_add", "repository_delete", "repository_detail", "repository_edit", "repository_list",
           "repository_test"]
