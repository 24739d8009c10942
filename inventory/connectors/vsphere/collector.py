"""PropertyCollector helpers: paged retrieval with explicit paths, and task polling.

Every read goes through RetrievePropertiesEx with named property paths (pyvmomi's managed-object
accessors fetch one property per call and trip over some unset properties).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyVmomi import vim, vmodl

PC = vmodl.query.PropertyCollector


@dataclass
class Collector:
    si: vim.ServiceInstance
    page_size: int = 500
    round_trips: int = 0
    content: vim.ServiceInstanceContent = field(init=False)

    def __post_init__(self) -> None:
        self.content = self.si.RetrieveContent()

    # -- reading -----------------------------------------------------------------------
    def retrieve(self, filter_spec: PC.FilterSpec) -> list[tuple[vmodl.ManagedObject, dict]]:
        """All objects the filter selects, one round trip per page; each as (object, {path: value})."""
        pc = self.content.propertyCollector
        options = PC.RetrieveOptions(maxObjects=self.page_size)
        result = pc.RetrievePropertiesEx([filter_spec], options)
        self.round_trips += 1
        found = []
        while result is not None:
            found.extend((obj.obj, {p.name: p.val for p in obj.propSet}) for obj in result.objects)
            if not result.token:
                break
            result = pc.ContinueRetrievePropertiesEx(result.token)
            self.round_trips += 1
        return found

    def properties(self, obj: vmodl.ManagedObject, paths: list[str]) -> dict:
        """Named properties of one object (one round trip)."""
        spec = PC.FilterSpec(
            objectSet=[PC.ObjectSpec(obj=obj, skip=False)],
            propSet=[PC.PropertySpec(type=type(obj), pathSet=paths)],
        )
        found = self.retrieve(spec)
        return found[0][1] if found else {}

    def container_view(self, types: Iterable[type]) -> vim.view.ContainerView:
        self.round_trips += 1
        return self.content.viewManager.CreateContainerView(self.content.rootFolder, list(types), True)

    def destroy(self, view: vim.view.ContainerView) -> None:
        self.round_trips += 1
        view.DestroyView()

    # -- tasks -------------------------------------------------------------------------
    def wait(self, task: vim.Task, timeout: float = 3600.0):
        """Poll a task's state until it ends; returns its result or raises its fault.

        Polls info.state/error/result by path: the whole `info` of some simulator tasks
        does not deserialize (its entity is typed as a snapshot).
        """
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            info = self.properties(task, ["info.state", "info.error", "info.result"])
            state = info.get("info.state")
            if state == vim.TaskInfo.State.success:
                return info.get("info.result")
            if state == vim.TaskInfo.State.error:
                error = info.get("info.error")
                raise error if isinstance(error, vmodl.MethodFault) else vmodl.fault.SystemError(reason=str(error))
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task._moId} did not finish within {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def view_filter(view: vim.view.ContainerView, specs: dict[type, list[str]]) -> PC.FilterSpec:
    """A filter over everything in a container view, with explicit paths per type."""
    traverse = PC.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
    return PC.FilterSpec(
        objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[traverse])],
        propSet=[PC.PropertySpec(type=kind, pathSet=paths) for kind, paths in specs.items()],
    )
