"""The protocol's messages and stubs under plain names.

Everything generated from ``proto/`` lives in ``clients._gen`` and is never
edited by hand; code outside the generated package imports it from here.
"""

from clients._gen.analytics.v1.campaign_pb2 import Campaign
from clients._gen.analytics.v1.campaign_service_pb2 import (
    CreateCampaignRequest,
    CreateCampaignResponse,
    ListCampaignsRequest,
    ListCampaignsResponse,
)
from clients._gen.analytics.v1.campaign_service_pb2_grpc import (
    CampaignServiceServicer,
    CampaignServiceStub,
    add_CampaignServiceServicer_to_server,
)
from clients._gen.analytics.v1.event_pb2 import (
    Event,
    EventMetadata,
    EventType,
    RejectedEvent,
    UndecodableEvent,
)
from clients._gen.analytics.v1.ingest_service_pb2 import (
    IngestCampaignEventRequest,
    IngestCampaignEventResponse,
    IngestEventsRequest,
    IngestEventsResponse,
    StreamEventsRequest,
    StreamEventsResponse,
)
from clients._gen.analytics.v1.ingest_service_pb2_grpc import (
    IngestServiceServicer,
    IngestServiceStub,
    add_IngestServiceServicer_to_server,
)
from clients._gen.analytics.v1.metrics_pb2 import (
    DashboardSummary,
    PipelineState,
    PipelineStatus,
    RealTimeMetrics,
    TopCampaign,
    TrendPoint,
)
from clients._gen.analytics.v1.metrics_service_pb2 import (
    GetCampaignMetricsRequest,
    GetCampaignMetricsResponse,
    GetDashboardRequest,
    GetDashboardResponse,
    GetPipelineStatusRequest,
    GetPipelineStatusResponse,
    GetTrendsRequest,
    GetTrendsResponse,
)
from clients._gen.analytics.v1.metrics_service_pb2_grpc import (
    MetricsServiceServicer,
    MetricsServiceStub,
    add_MetricsServiceServicer_to_server,
)
from clients._gen.analytics.v1.simulation_service_pb2 import (
    GetSimulationStatusRequest,
    GetSimulationStatusResponse,
    SimulateRequest,
    SimulateResponse,
    Simulation,
    SimulationAction,
    SimulationOptions,
    SimulationState,
    SimulationStatus,
)
from clients._gen.analytics.v1.simulation_service_pb2_grpc import (
    SimulationServiceServicer,
    SimulationServiceStub,
    add_SimulationServiceServicer_to_server,
)
from clients._gen.analytics.v1.subscription_service_pb2 import (
    AnalyticsUpdate,
    CreateSubscriptionRequest,
    CreateSubscriptionResponse,
    DeleteSubscriptionRequest,
    DeleteSubscriptionResponse,
    GetSubscriptionRequest,
    GetSubscriptionResponse,
    GetSubscriptionStatsRequest,
    GetSubscriptionStatsResponse,
    GetUpdatesRequest,
    GetUpdatesResponse,
    Heartbeat,
    MetricsUpdate,
    StreamUpdatesRequest,
    StreamUpdatesResponse,
    Subscription,
    UpdateType,
)
from clients._gen.analytics.v1.subscription_service_pb2_grpc import (
    SubscriptionServiceServicer,
    SubscriptionServiceStub,
    add_SubscriptionServiceServicer_to_server,
)

# Full service names, for health checks and reflection.
SERVICE_NAMES = (
    "analytics.v1.IngestService",
    "analytics.v1.MetricsService",
    "analytics.v1.CampaignService",
    "analytics.v1.SubscriptionService",
    "analytics.v1.SimulationService",
)

__all__ = [
    "SERVICE_NAMES",
    "AnalyticsUpdate",
    "Campaign",
    "CampaignServiceServicer",
    "CampaignServiceStub",
    "CreateCampaignRequest",
    "CreateCampaignResponse",
    "CreateSubscriptionRequest",
    "CreateSubscriptionResponse",
    "DashboardSummary",
    "DeleteSubscriptionRequest",
    "DeleteSubscriptionResponse",
    "Event",
    "EventMetadata",
    "EventType",
    "GetCampaignMetricsRequest",
    "GetCampaignMetricsResponse",
    "GetDashboardRequest",
    "GetDashboardResponse",
    "GetPipelineStatusRequest",
    "GetPipelineStatusResponse",
    "GetSimulationStatusRequest",
    "GetSimulationStatusResponse",
    "GetSubscriptionRequest",
    "GetSubscriptionResponse",
    "GetSubscriptionStatsRequest",
    "GetSubscriptionStatsResponse",
    "GetTrendsRequest",
    "GetTrendsResponse",
    "GetUpdatesRequest",
    "GetUpdatesResponse",
    "Heartbeat",
    "IngestCampaignEventRequest",
    "IngestCampaignEventResponse",
    "IngestEventsRequest",
    "IngestEventsResponse",
    "IngestServiceServicer",
    "IngestServiceStub",
    "ListCampaignsRequest",
    "ListCampaignsResponse",
    "MetricsServiceServicer",
    "MetricsServiceStub",
    "MetricsUpdate",
    "PipelineState",
    "PipelineStatus",
    "RealTimeMetrics",
    "RejectedEvent",
    "SimulateRequest",
    "SimulateResponse",
    "Simulation",
    "SimulationAction",
    "SimulationOptions",
    "SimulationServiceServicer",
    "SimulationServiceStub",
    "SimulationState",
    "SimulationStatus",
    "StreamEventsRequest",
    "StreamEventsResponse",
    "StreamUpdatesRequest",
    "StreamUpdatesResponse",
    "Subscription",
    "SubscriptionServiceServicer",
    "SubscriptionServiceStub",
    "TopCampaign",
    "TrendPoint",
    "UndecodableEvent",
    "UpdateType",
    "add_CampaignServiceServicer_to_server",
    "add_IngestServiceServicer_to_server",
    "add_MetricsServiceServicer_to_server",
    "add_SimulationServiceServicer_to_server",
    "add_SubscriptionServiceServicer_to_server",
]
