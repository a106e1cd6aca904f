//! gRPC calls to KServe's inference service: authentication ran at header time as for every
//! request; the model is read from the message ([`crate::grpc`]), then authorized and rate
//! limited exactly as the REST endpoint the method stands for (the repository methods need the
//! model's `adminScopes`, as `/v2/repository/models/{m}/...` does).
//!
//! The route was chosen by path when the header phase continued (Envoy fixes it then), so the
//! body's model sets no routing header. Denials are the REST replies; the host answers a gRPC
//! client with them as trailers-only responses, `grpc-status` mapped from the HTTP status as
//! Envoy maps it (`Grpc::Utility::httpToGrpcStatus`).

use std::sync::Arc;
use std::time::SystemTime;

use super::{Engine, since_epoch};
use crate::config::Protocol;
use crate::decision::{
    BodyDecision, Continue, HeaderEdits, HeadersDecision, NeedBody, Outcome, Pending,
    PendingRequest, Stage, Verdict,
};
use crate::jwt::Identity;
use crate::request::RequestView;
use crate::routing::{self, Endpoint};
use crate::store::SharedStore;
use crate::{grpc, reply};

impl Engine {
    /// Header time of a call whose message names the model: every edit that does not depend
    /// on the model applies now, and the body is asked for.
    pub(super) fn grpc_needs_body(
        &self,
        request: &RequestView<'_>,
        endpoint: Endpoint,
        identity: Option<Arc<Identity>>,
        mut edits: HeaderEdits,
    ) -> HeadersDecision {
        if request.method != "POST" {
            return HeadersDecision::Reply(reply::invalid(
                "gRPC methods are called with POST",
                None,
            ));
        }
        let limit_key = self.limit_key(request, identity.as_deref());
        self.set_key_header(&mut edits, limit_key.clone());
        HeadersDecision::NeedBody(NeedBody {
            max_bytes: self.max_body_bytes,
            route_changed: edits.remove.contains(&self.routing_header),
            headers: edits.without_redundant_removals(),
            // The route is chosen by path (module docs): nothing to hold the headers for.
            hold_headers: false,
            pending: PendingRequest(Pending {
                max_bytes: self.max_body_bytes,
                subject: None,
                stage: Stage::Grpc {
                    endpoint,
                    identity,
                    limit_key,
                },
            }),
        })
    }

    /// The complete message is in: read the model, then authorize and rate limit.
    pub(super) fn grpc_body(
        &self,
        endpoint: Endpoint,
        identity: Option<&Identity>,
        limit_key: &str,
        body: &[u8],
        now: SystemTime,
        store: &dyn SharedStore,
    ) -> BodyDecision {
        let name = match grpc::model_name(body) {
            Ok(name) => name,
            Err(message) => return BodyDecision::Reply(reply::invalid(&message, None)),
        };
        if !routing::valid_name(name) {
            return BodyDecision::Reply(reply::invalid(
                &format!("gRPC message: invalid model name {name:?}"),
                None,
            ));
        }
        // gRPC is the V2 (Open Inference) protocol; a repository action acts on any model.
        let id = match self.models.lookup(name) {
            Some(id)
                if endpoint == Endpoint::Repository || self.models.get(id).speaks(Protocol::V2) =>
            {
                id
            }
            _ => {
                return match self.unknown(name, HeaderEdits::default()) {
                    HeadersDecision::Continue(c) => BodyDecision::Continue(c),
                    HeadersDecision::Reply(r) => BodyDecision::Reply(r),
                    HeadersDecision::NeedBody(_) => {
                        BodyDecision::Reply(reply::internal_fault(None))
                    }
                };
            }
        };
        let requirements = match self.requirements(id, endpoint) {
            Ok(requirements) => requirements,
            Err(reply) => return BodyDecision::Reply(reply),
        };
        match self.admit(
            id,
            requirements,
            identity,
            limit_key,
            since_epoch(now),
            store,
        ) {
            Ok(shadow_limited) => {
                let name = Arc::clone(&self.models.get(id).name);
                let mut verdict = Verdict::new(Some(name), Outcome::Allowed);
                verdict.shadow_rate_limited = shadow_limited;
                BodyDecision::Continue(Continue {
                    headers: HeaderEdits::default(),
                    route_changed: false,
                    verdict,
                    openai: None,
                })
            }
            Err(reply) => BodyDecision::Reply(reply),
        }
    }
}
