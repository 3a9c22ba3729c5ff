"""The fleet: the fleet file's one format, the fleet model and where replicas are placed.

Pure core (no I/O): :mod:`~npucenter.fleet.spec` parses and validates a fleet mapping
(servers, services, SLOs, routing, traffic, ``tenants:`` via :mod:`~npucenter.fleet.tenants`,
``jobs:`` via :mod:`~npucenter.fleet.jobs`, services' and jobs' ``fallback_devices:`` via
:mod:`~npucenter.fleet.devices`); :mod:`~npucenter.fleet.placement` places its
replicas with the admission policy the control plane runs; :mod:`~npucenter.fleet.model` is the
live center's view (server groups, deployments, pinned replicas, tariff). The simulator, the
planner and the live center all use it; :mod:`npucenter.files.fleet` opens the file and
:mod:`npucenter.gateway.fleet` registers and serves it.
"""

from __future__ import annotations

from npucenter.fleet.jobs import JobSpec, jobs_from_list
from npucenter.fleet.model import (
    DEFAULT_MODEL,
    Fleet,
    PinnedReplica,
    ServiceGroup,
    default_fleet,
    fleet_from_dict,
    fleet_from_spec,
)
from npucenter.fleet.placement import (
    FleetAdmission,
    FleetPlacement,
    PlacedReplica,
    fleet_admission,
    fleet_servers,
    pinned_cards,
    place_fleet,
    tenant_of,
)
from npucenter.fleet.spec import (
    FleetDeployment,
    FleetService,
    FleetSpec,
    ServerPool,
    fleet_spec_from_mapping,
)
from npucenter.fleet.tenants import tenant_quotas_from_mapping

__all__ = [
    "DEFAULT_MODEL",
    "Fleet",
    "FleetAdmission",
    "FleetDeployment",
    "FleetPlacement",
    "FleetService",
    "FleetSpec",
    "JobSpec",
    "PinnedReplica",
    "PlacedReplica",
    "ServerPool",
    "ServiceGroup",
    "default_fleet",
    "fleet_admission",
    "fleet_from_dict",
    "fleet_from_spec",
    "fleet_servers",
    "fleet_spec_from_mapping",
    "jobs_from_list",
    "pinned_cards",
    "place_fleet",
    "tenant_of",
    "tenant_quotas_from_mapping",
]
