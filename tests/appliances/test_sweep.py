"""Fleet operations whose worker died are ended by the sweep, so their appliances are not stuck busy."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from appliances import services
from appliances.models import Appliance, FleetOperation
from appliances.operations import sweep_interrupted
from tests.appliances.conftest import values


def test_an_operation_whose_worker_died_is_ended_and_frees_the_appliance(place):
    appliance = Appliance.objects.create(**values(place))
    operation = services.start_deploy([appliance], queue=False)
    lifetime = timedelta(seconds=settings.Q_CLUSTER["timeout"])
    started = timezone.now() - lifetime - timedelta(hours=1)
    FleetOperation.objects.filter(pk=operation.pk).update(state="running", started=started)
    operation.items.update(state="running")
    Appliance.objects.filter(pk=appliance.pk).update(state="deploying")
    with pytest.raises(services.ApplianceBusy):
        services.start_remove(appliance)

    assert sweep_interrupted(now=started + lifetime - timedelta(minutes=1)) == 0  # within a task's lifetime
    assert sweep_interrupted() == 1

    operation.refresh_from_db()
    appliance.refresh_from_db()
    assert operation.state == "failed" and "interrupted" in operation.message
    assert operation.items.get().state == "failed"
    assert appliance.state == Appliance.State.FAILED and "interrupted" in appliance.state_message
    assert services.work_of(appliance) == []  # free to deploy again or remove
