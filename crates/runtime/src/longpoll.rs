//! PLACEHOLDER: long-poll transport.
use crate::endpoint::Shared;
use std::sync::Arc;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;
pub(crate) fn route(_shared: Arc<Shared>, path: String) -> BoxedFilter<(Response,)> {
    crate::websocket::exact_path(path)
        .map(|| crate::websocket::status(warp::http::StatusCode::NOT_FOUND, ""))
        .boxed()
}
