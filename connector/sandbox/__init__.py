"""Local stand-in for the Salesforce API with a synthetic organisation behind it.

``Sandbox`` generates an org (leads, campaigns, activities, conversions) with a known hidden
model, and serves the subset of the Salesforce REST API that leadscore uses over real HTTPS on
127.0.0.1. See ``docs/sandbox.md``.
"""

from connector.sandbox.faults import (
    Drop,
    Fault,
    FaultPlan,
    FaultRule,
    InjectedFaults,
    RecordFault,
    RequestInfo,
    Slow,
)
from connector.sandbox.salesforce_api import RequestRecord
from connector.sandbox.service import Sandbox

__all__ = [
    "Drop",
    "Fault",
    "FaultPlan",
    "FaultRule",
    "InjectedFaults",
    "RecordFault",
    "RequestInfo",
    "RequestRecord",
    "Sandbox",
    "Slow",
]
