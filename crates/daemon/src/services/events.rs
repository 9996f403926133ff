//! `containerd.services.events.v1.Events` (gRPC) and
//! `containerd.services.events.ttrpc.v1.Events` (ttrpc, used by shims).

use std::pin::Pin;
use std::sync::Arc;

use berth_api::containerd::services::events::v1::events_server::Events;
use berth_api::containerd::services::events::v1::{
    ForwardRequest, PublishRequest, SubscribeRequest,
};
use berth_api::containerd::types::Envelope as WireEnvelope;
use berth_events::{Envelope, Exchange};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::wire::{events_status, from_timestamp, to_timestamp};

/// The library envelope of a wire envelope.
pub fn from_wire(e: WireEnvelope) -> Result<Envelope, Status> {
    Ok(Envelope {
        timestamp: from_timestamp(e.timestamp),
        namespace: e.namespace,
        topic: e.topic,
        event: e
            .event
            .ok_or_else(|| Status::invalid_argument("envelope has no event"))?,
    })
}

/// The wire envelope of a library envelope.
pub(crate) fn to_wire(e: Envelope) -> WireEnvelope {
    WireEnvelope {
        timestamp: Some(to_timestamp(e.timestamp)),
        namespace: e.namespace,
        topic: e.topic,
        event: Some(e.event),
    }
}

/// Publishes, forwards and streams events through the exchange.
#[derive(Debug, Clone)]
pub(crate) struct EventsService {
    exchange: Arc<Exchange>,
}

impl EventsService {
    /// A service over `exchange`.
    pub(crate) fn new(exchange: Arc<Exchange>) -> EventsService {
        EventsService { exchange }
    }
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<WireEnvelope, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let namespace = super::namespace_of(&request)?;
        let req = request.into_inner();
        let event = req
            .event
            .ok_or_else(|| Status::invalid_argument("publish request has no event"))?;
        self.exchange
            .publish(&namespace, &req.topic, event)
            .map_err(events_status)?;
        Ok(Response::new(()))
    }

    async fn forward(&self, request: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("forward request has no envelope"))?;
        self.exchange
            .forward(from_wire(envelope)?)
            .map_err(events_status)?;
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let sub = self
            .exchange
            .subscribe(&request.get_ref().filters)
            .map_err(events_status)?;
        let stream = sub.map(|e| e.map(to_wire).map_err(events_status));
        Ok(Response::new(Box::pin(stream)))
    }
}

/// The ttrpc `Forward` endpoint shims publish their task events to.
#[derive(Debug, Clone)]
pub(crate) struct TtrpcEventsService {
    exchange: Arc<Exchange>,
}

impl TtrpcEventsService {
    /// A service over `exchange`.
    pub(crate) fn new(exchange: Arc<Exchange>) -> TtrpcEventsService {
        TtrpcEventsService { exchange }
    }
}

#[async_trait::async_trait]
impl berth_api::containerd::services::events::ttrpc::v1::Events for TtrpcEventsService {
    async fn forward(
        &self,
        _ctx: &ttrpc::asynchronous::TtrpcContext,
        req: berth_api::containerd::services::events::ttrpc::v1::ForwardRequest,
    ) -> ttrpc::Result<()> {
        let Some(envelope) = req.envelope else {
            return Err(berth_api::errdefs::RpcError::new(
                berth_api::Category::InvalidArgument,
                "forward request has no envelope",
            )
            .into());
        };
        let envelope = from_wire(envelope).map_err(|s| {
            ttrpc::Error::from(berth_api::errdefs::RpcError::new(
                berth_api::Category::InvalidArgument,
                s.message(),
            ))
        })?;
        self.exchange.forward(envelope).map_err(|e| {
            ttrpc::Error::from(berth_api::errdefs::RpcError::new(
                berth_api::Category::InvalidArgument,
                e.to_string(),
            ))
        })
    }
}
