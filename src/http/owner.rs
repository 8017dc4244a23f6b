//! Sends a request about a receipt or a consumer set to the replica that holds it.
//!
//! Runs after routing, before the handler: the route says which path parameter is a token.
//! The client's own credentials travel with the forwarded request, so the owner authorizes it
//! exactly as if it had come straight there.

use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::state::AppState;
use crate::cluster::forward::{INSTANCE_HEADER, NotForwarded, Origin};
use crate::cluster::tokens::Whose;

/// Settling and consumer set requests carry no body to speak of.
const FORWARDED_BODY_MAX: usize = 64 * 1024;

/// What a token names, for the answer when its replica is gone.
#[derive(Clone, Copy)]
enum Held {
    Lease,
    ConsumerSet,
}

impl Held {
    fn lost(self, why: &str) -> ApiError {
        match self {
            Held::Lease => ApiError::LeaseLost(format!(
                "the replica that leased this message is gone ({why}); the lease was released \
                 and the message will be redelivered"
            )),
            Held::ConsumerSet => ApiError::ConsumerLost(format!(
                "the replica that held this consumer set is gone ({why}); its unsettled \
                 messages go back to their queues; create a new set"
            )),
        }
    }
}

pub async fn route_to_owner(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if !state.cluster.tokens.is_replica() {
        return next.run(request).await;
    }
    let origin = state.cluster.origin(&request);
    if matches!(origin, Origin::Forged) {
        return ApiError::Unauthorized(
            "the carrot-peer header is not a signature of a replica sharing this gateway's \
             peer_secret (or the clocks differ by more than 5 minutes)"
                .into(),
        )
        .into_response();
    }
    let (mut parts, body) = request.into_parts();
    let token = RawPathParams::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .and_then(|params| {
            params.iter().find_map(|(name, value)| match name {
                "receipt" => Some((Held::Lease, value.to_owned())),
                "id" => Some((Held::ConsumerSet, value.to_owned())),
                _ => None,
            })
        });
    let request = Request::from_parts(parts, body);
    let Some((held, token)) = token else {
        return next.run(request).await;
    };
    match state.cluster.tokens.whose(&token) {
        Whose::Here => {
            let mut response = next.run(request).await;
            if let (Origin::Replica, Some((_, instance))) = (origin, state.cluster.tokens.me())
                && let Ok(value) = HeaderValue::from_str(instance)
            {
                response.headers_mut().insert(INSTANCE_HEADER, value);
            }
            response
        }
        Whose::Gone => held
            .lost("it restarted since; this is its successor at the same address")
            .into_response(),
        // A replica forwarded it here, yet this is not the owner: the owner's address now
        // belongs to another process.
        Whose::Peer { .. } if matches!(origin, Origin::Replica) => held
            .lost("its address now answers as another replica")
            .into_response(),
        Whose::Peer {
            url: owner,
            instance,
        } => {
            match state
                .cluster
                .forward(&owner, &instance, request, FORWARDED_BODY_MAX)
                .await
            {
                Ok(response) => response,
                Err(NotForwarded::OwnerGone(why)) => {
                    tracing::info!(%owner, %why, "replica gone; answering 410");
                    held.lost("it does not answer").into_response()
                }
                Err(NotForwarded::Unavailable(why)) => ApiError::ReplicaUnavailable(format!(
                    "the replica holding this could not finish answering ({why}); try again"
                ))
                .into_response(),
                Err(NotForwarded::Body(why)) => {
                    ApiError::InvalidRequest(format!("the request body: {why}")).into_response()
                }
            }
        }
    }
}
