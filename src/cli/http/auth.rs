//! Authentication of `serve`'s routes: a set of routes asks for one of the
//! API keys (`--api-key-file`) and answers 401 without one, in its own
//! encoding and with its own challenge. The ingest endpoints and the viewer
//! each put their routes behind a [`KeyGuard`]; neither lends it to the
//! other.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::api_keys::{self, ApiKeys};
use super::rejection::Rejection;

/// Which keys a set of routes asks for, and how its 401 asks for one.
#[derive(Clone)]
pub(crate) struct KeyGuard {
    /// `None`: no key is asked for (only allowed on a loopback address).
    keys: Option<ApiKeys>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: &'static str,
    /// How the routes' answers write a refusal (for the request's headers).
    render: fn(Rejection, &HeaderMap) -> Response,
}

impl KeyGuard {
    /// Ask for one of `keys` (none when `None`); a 401 carries `challenge`
    /// as its `WWW-Authenticate` and is written by `render`, in the
    /// routes' own encoding. A `Basic` challenge is how a browser meets the
    /// key: as a prompt (any user name, the key as the password).
    pub(crate) fn new(
        keys: Option<ApiKeys>,
        challenge: &'static str,
        render: fn(Rejection, &HeaderMap) -> Response,
    ) -> KeyGuard {
        KeyGuard {
            keys,
            challenge,
            render,
        }
    }

    /// `routes`, each behind this guard.
    pub(crate) fn guard<S>(self, routes: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        routes.route_layer(axum::middleware::from_fn_with_state(self, authorize))
    }
}

/// A refusal as `{"error": "..."}`.
pub(crate) fn as_json(rejection: Rejection, _: &HeaderMap) -> Response {
    rejection.into_response()
}

/// 401 unless the request carries a valid key (when keys are configured).
async fn authorize(State(guard): State<KeyGuard>, request: Request, next: Next) -> Response {
    let Some(keys) = &guard.keys else {
        return next.run(request).await;
    };
    match api_keys::presented(request.headers()) {
        Some(key) if keys.accepts(&key) => next.run(request).await,
        presented => {
            // Never the key itself: only whether one came.
            let why = if presented.is_some() {
                "the API key is not valid"
            } else {
                "an API key is required: send Authorization: Bearer KEY or X-Api-Key: KEY"
            };
            let rejection = Rejection::new(StatusCode::UNAUTHORIZED, why);
            let mut response = (guard.render)(rejection, request.headers());
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(guard.challenge),
            );
            response
        }
    }
}
